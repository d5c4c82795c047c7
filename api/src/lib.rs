//! The `serving.knative.dev/v1` API as Sluice stores and serves it: typed objects, defaulting,
//! validation with field paths, child names, label and annotation keys, and the operator's
//! config maps. Pure data and pure functions: nothing here does I/O.
//!
//! Owns Knative's API contract and the one `admission::admit` every client's writes pass.
//! Must not depend on any other Sluice crate, or do I/O.

pub mod admission;
pub mod autoscaling;
pub mod condition;
pub mod config;
pub mod configuration;
pub mod contract;
pub mod crd;
pub mod defaults;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod revision;
pub mod route;
pub mod service;
pub mod template;
pub mod validation;

pub use condition::{Condition, ConditionStatus};
pub use configuration::{Configuration, ConfigurationSpec, ConfigurationStatus};
pub use manifest::{Object, ObjectKind};
pub use revision::{Revision, RevisionSpec, RevisionStatus};
pub use route::{Route, RouteSpec, RouteStatus, TrafficTarget};
pub use service::{Service, ServiceSpec, ServiceStatus};
pub use template::{Container, RevisionTemplateSpec, TemplateMeta};
pub use validation::{FieldError, ValidationError};

/// The API group of every Sluice object, Knative's own.
pub const GROUP: &str = "serving.knative.dev";
/// The only served version.
pub const VERSION: &str = "v1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "serving.knative.dev/v1";
