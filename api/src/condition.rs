//! Knative's `duckv1` condition and the rules for setting conditions deterministically.
//!
//! A condition's `lastTransitionTime` moves only when its status flips, and conditions are
//! kept sorted by type, so recomputing an unchanged status yields byte-identical output and a
//! controller never loops on its own writes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tri-state of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold; `reason` and `message` say why.
    False,
    /// Not known yet (work in progress).
    #[default]
    Unknown,
}

/// One observation about an object, as in Knative's `apis.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Empty for the top-level condition; `Error`, `Warning` or `Info` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// One CamelCase word saying why the status is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Condition {
    /// A condition that holds.
    pub fn true_(type_: &str) -> Self {
        Self {
            type_: type_.to_owned(),
            status: ConditionStatus::True,
            ..Self::default()
        }
    }

    /// A condition that does not hold, with the reason and message.
    pub fn false_(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_owned(),
            status: ConditionStatus::False,
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
            ..Self::default()
        }
    }

    /// A condition still in progress, with the reason and message.
    pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_owned(),
            status: ConditionStatus::Unknown,
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
            ..Self::default()
        }
    }

    /// Whether the status is True.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }

    /// The same condition under another type (used when propagating a child's Ready).
    pub fn retyped(&self, type_: &str) -> Self {
        Self {
            type_: type_.to_owned(),
            last_transition_time: None,
            ..self.clone()
        }
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `Ready` is True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find(conditions, "Ready").is_some_and(Condition::is_true)
}

/// Merges freshly computed conditions with the previous ones: a condition keeps its previous
/// `lastTransitionTime` unless its status changed, in which case it gets `now`. The result is
/// sorted by type.
pub fn merge(previous: &[Condition], computed: Vec<Condition>, now: &str) -> Vec<Condition> {
    let mut out: Vec<Condition> = computed
        .into_iter()
        .map(|mut c| {
            c.last_transition_time = match find(previous, &c.type_) {
                Some(old) if old.status == c.status => old.last_transition_time.clone(),
                _ => Some(now.to_owned()),
            };
            c
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Computes the top-level `Ready` from its dependent conditions, Knative's "living condition
/// set": False if any dependent is False, else Unknown if any is Unknown, else True. The
/// reason and message come from the first dependent that is not True.
pub fn ready_from(dependents: &[Condition]) -> Condition {
    let failing = dependents
        .iter()
        .find(|c| c.status == ConditionStatus::False);
    let pending = dependents
        .iter()
        .find(|c| c.status == ConditionStatus::Unknown);
    match failing.or(pending) {
        Some(c) => Condition {
            severity: None,
            ..c.retyped("Ready")
        },
        None => Condition::true_("Ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            vec![Condition::unknown("Ready", "Deploying", "")],
            "t1",
        );
        let same = merge(
            &first,
            vec![Condition::unknown("Ready", "Deploying", "x")],
            "t2",
        );
        assert_eq!(same[0].last_transition_time.as_deref(), Some("t1"));
        let flipped = merge(&same, vec![Condition::true_("Ready")], "t3");
        assert_eq!(flipped[0].last_transition_time.as_deref(), Some("t3"));
    }

    #[test]
    fn merged_conditions_are_sorted_by_type() {
        let out = merge(
            &[],
            vec![Condition::true_("Ready"), Condition::true_("Active")],
            "t",
        );
        let types: Vec<_> = out.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Active", "Ready"]);
    }

    #[test]
    fn ready_prefers_false_over_unknown() {
        let ready = ready_from(&[
            Condition::unknown("A", "Wait", "waiting"),
            Condition::false_("B", "Broken", "broken"),
        ]);
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.reason.as_deref(), Some("Broken"));
        assert!(ready_from(&[Condition::true_("A")]).is_true());
    }
}
