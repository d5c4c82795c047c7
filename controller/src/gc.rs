//! Revision garbage collection per config-gc, Knative's algorithm: revisions that serve or are
//! protected are active and kept; of the rest, the stale ones go oldest first while more than
//! `min-non-active-revisions` remain, then the oldest extras past `max-non-active-revisions`.
//! Time is a parameter, so tests drive it.

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use sluice_api::config::GcConfig;
use sluice_api::{Revision, keys};

/// Annotation recording when a revision's routing state last changed.
pub use sluice_api::keys::ROUTING_STATE_MODIFIED;

fn annotation<'a>(rev: &'a Revision, key: &str) -> Option<&'a str> {
    rev.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn created(rev: &Revision) -> Timestamp {
    rev.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// When the revision last served: its routing-state change time, else its creation.
pub fn last_active(rev: &Revision) -> Timestamp {
    annotation(rev, ROUTING_STATE_MODIFIED)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| created(rev))
}

fn older_than(t: Timestamp, age: std::time::Duration, now: Timestamp) -> bool {
    let age = SignedDuration::try_from(age).unwrap_or(SignedDuration::MAX);
    t.checked_add(age).is_ok_and(|limit| limit <= now)
}

fn stale(rev: &Revision, cfg: &GcConfig, now: Timestamp) -> bool {
    let (create, active) = (
        cfg.retain_since_create_time,
        cfg.retain_since_last_active_time,
    );
    if create.is_none() && active.is_none() {
        return false;
    }
    create.is_none_or(|age| older_than(created(rev), age, now))
        && active.is_none_or(|age| older_than(last_active(rev), age, now))
}

/// Names of the revisions of one configuration to delete. `protected` holds the names that
/// are active: routed, the configuration's latest created and latest ready.
pub fn collect(
    revisions: &[Revision],
    protected: &HashSet<String>,
    cfg: &GcConfig,
    now: Timestamp,
) -> Vec<String> {
    let min = cfg.min_non_active_revisions;
    let mut non_active: Vec<&Revision> = revisions
        .iter()
        .filter(|r| {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            !protected.contains(name) && annotation(r, keys::NO_GC) != Some("true")
        })
        .collect();
    if revisions.len() <= min || non_active.len() <= min {
        return Vec::new();
    }
    non_active.sort_by_key(|r| last_active(r));
    let mut delete: Vec<&Revision> = Vec::new();
    let mut remaining = non_active.len();
    for rev in &non_active {
        if remaining <= min {
            break;
        }
        if stale(rev, cfg, now) {
            delete.push(rev);
            remaining -= 1;
        }
    }
    if let Some(max) = cfg.max_non_active_revisions {
        let kept: Vec<&&Revision> = non_active
            .iter()
            .filter(|r| !delete.iter().any(|d| std::ptr::eq(*d, **r)))
            .collect();
        let extra = kept.len().saturating_sub(max);
        delete.extend(kept.into_iter().take(extra).copied());
    }
    delete
        .into_iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use sluice_api::RevisionSpec;

    const HOUR: i64 = 3600;

    fn rev(
        name: &str,
        created_hours_ago: i64,
        active_hours_ago: Option<i64>,
        now: Timestamp,
    ) -> Revision {
        let mut r = Revision::new(name, RevisionSpec::default());
        r.metadata.creation_timestamp = Some(Time(
            now - SignedDuration::from_secs(created_hours_ago * HOUR),
        ));
        if let Some(h) = active_hours_ago {
            let t = now - SignedDuration::from_secs(h * HOUR);
            r.metadata.annotations =
                Some([(ROUTING_STATE_MODIFIED.to_owned(), t.to_string())].into());
        }
        r
    }

    fn cfg(min: usize, max: Option<usize>) -> GcConfig {
        GcConfig {
            min_non_active_revisions: min,
            max_non_active_revisions: max,
            ..GcConfig::default()
        }
    }

    #[test]
    fn stale_revisions_go_oldest_first_keeping_min() {
        let now = Timestamp::now();
        let revs = vec![
            rev("a-1", 100, Some(90), now),
            rev("a-2", 100, Some(80), now),
            rev("a-3", 100, Some(70), now),
            rev("a-4", 1, None, now),
        ];
        let protected = HashSet::from(["a-4".to_owned()]);
        assert_eq!(
            collect(&revs, &protected, &cfg(1, Some(1000)), now),
            ["a-1", "a-2"]
        );
        // Recently active revisions are not stale.
        let recent = vec![
            rev("b-1", 100, Some(2), now),
            rev("b-2", 100, Some(3), now),
            rev("b-3", 1, None, now),
        ];
        assert!(
            collect(
                &recent,
                &HashSet::from(["b-3".to_owned()]),
                &cfg(0, Some(1000)),
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn max_non_active_trims_the_oldest_even_when_fresh() {
        let now = Timestamp::now();
        let revs = vec![
            rev("c-1", 3, Some(3), now),
            rev("c-2", 2, Some(2), now),
            rev("c-3", 1, Some(1), now),
            rev("c-4", 0, None, now),
        ];
        let protected = HashSet::from(["c-4".to_owned()]);
        assert_eq!(
            collect(&revs, &protected, &cfg(0, Some(1)), now),
            ["c-1", "c-2"]
        );
    }

    #[test]
    fn no_gc_annotation_and_disabled_ages_protect() {
        let now = Timestamp::now();
        let mut pinned = rev("d-1", 100, Some(90), now);
        pinned
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::NO_GC.to_owned(), "true".to_owned());
        let revs = vec![
            pinned,
            rev("d-2", 100, Some(90), now),
            rev("d-3", 0, None, now),
        ];
        assert_eq!(
            collect(
                &revs,
                &HashSet::from(["d-3".to_owned()]),
                &cfg(0, None),
                now
            ),
            ["d-2"]
        );
        let never = GcConfig {
            retain_since_create_time: None,
            retain_since_last_active_time: None,
            ..cfg(0, None)
        };
        assert!(collect(&revs, &HashSet::new(), &never, now).is_empty());
        // Time moves on: a revision active 10 h ago is kept until 15 h have passed.
        let later = vec![rev("e-1", 100, Some(10), now), rev("e-2", 0, None, now)];
        let protected = HashSet::from(["e-2".to_owned()]);
        assert!(collect(&later, &protected, &cfg(0, None), now).is_empty());
        let five_hours_on = now + SignedDuration::from_secs(5 * HOUR + 1);
        assert_eq!(
            collect(&later, &protected, &cfg(0, None), five_hours_on),
            ["e-1"]
        );
    }
}
