//! Configuration: the template that stamps revisions.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::template::RevisionTemplateSpec;

/// The desired state of a configuration.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serving.knative.dev",
    version = "v1",
    kind = "Configuration",
    namespaced,
    status = "ConfigurationStatus",
    shortname = "config",
    shortname = "cfg",
    category = "all",
    category = "knative",
    category = "serving",
    derive = "PartialEq",
    printcolumn = r#"{"name":"LatestCreated","type":"string","jsonPath":".status.latestCreatedRevisionName"}"#,
    printcolumn = r#"{"name":"LatestReady","type":"string","jsonPath":".status.latestReadyRevisionName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason"}"#
)]
pub struct ConfigurationSpec {
    /// The template of the next revision.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
}

/// The observed state of a configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The configuration-specific fields, shared with Service status.
    #[serde(flatten)]
    pub fields: ConfigurationStatusFields,
}

/// Status fields a Service inlines from its Configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatusFields {
    /// The newest revision stamped from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision_name: Option<String>,
    /// The newest revision that became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision_name: Option<String>,
}
