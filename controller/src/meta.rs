//! Metadata helpers shared by the reconcilers: owner references, labels, annotations.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sluice_api::API_VERSION;

/// A controlling owner reference to `owner` of `kind`.
pub fn owner_ref(kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controlling owner's kind and name, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<(&str, &str)> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// A label value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The labels of an object (empty when none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// The annotations of an object (empty when none).
pub fn annotations(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

/// `now` as a condition's `lastTransitionTime`: RFC 3339 to the second, as Kubernetes writes it.
pub fn transition_time(now: jiff::Timestamp) -> String {
    now.round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A fixed time for tests of the reconcilers: 2026-12-01T00:00:00Z.
#[cfg(test)]
pub(crate) fn t0() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_764_547_200).expect("in range")
}

/// `Some(map)` unless empty, as metadata stores it.
pub fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}
