//! kn's traffic flags: `--untag TAG`, `--tag REF=TAG`, `--traffic REF=PERCENT`, applied in
//! that order whatever the order on the command line, with kn's rule for filling in the one
//! missing percentage and kn's error messages. A pure function of the service's traffic.

use std::collections::BTreeSet;

use sluice_api::TrafficTarget;

/// The flags as given.
#[derive(Clone, Debug, Default)]
pub struct TrafficFlags {
    /// `--traffic REF=PERCENT` (a bare number means `@latest`).
    pub traffic: Vec<String>,
    /// `--tag REF=TAG` (a bare tag means `@latest`).
    pub tags: Vec<String>,
    /// `--untag TAG`.
    pub untags: Vec<String>,
}

impl TrafficFlags {
    /// Whether any traffic flag was given.
    pub fn any(&self) -> bool {
        !(self.traffic.is_empty() && self.tags.is_empty() && self.untags.is_empty())
    }
}

const LATEST: &str = "@latest";

fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn pair(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        Some(_) => Err(format!(
            "expecting the value format in value1=value2, given {value}"
        )),
        None => Ok((LATEST.to_owned(), value.to_owned())),
    }
}

fn latest_target() -> TrafficTarget {
    TrafficTarget {
        latest_revision: Some(true),
        percent: Some(0),
        ..TrafficTarget::default()
    }
}

fn revision_target(rev: &str) -> TrafficTarget {
    TrafficTarget {
        revision_name: Some(rev.to_owned()),
        latest_revision: Some(false),
        percent: Some(0),
        ..TrafficTarget::default()
    }
}

fn is_latest(t: &TrafficTarget) -> bool {
    t.latest_revision == Some(true)
}

/// Computes the new `spec.traffic` of service `service` from its current spec traffic, its
/// status traffic (for the fill-in rule) and the flags. `new_revision` says whether the same
/// command also changes the template, so `@latest` is the revision it creates.
pub fn compute(
    service: &str,
    spec: &[TrafficTarget],
    status: &[TrafficTarget],
    flags: &TrafficFlags,
    new_revision: bool,
) -> Result<Vec<TrafficTarget>, String> {
    let mut targets: Vec<TrafficTarget> = if spec.is_empty() {
        vec![TrafficTarget {
            percent: Some(100),
            ..latest_target()
        }]
    } else {
        spec.to_vec()
    };

    // 1. Untag.
    let untags = split_list(&flags.untags);
    let missing: Vec<&str> = untags
        .iter()
        .filter(|tag| {
            !targets
                .iter()
                .any(|t| t.tag.as_deref() == Some(tag.as_str()))
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "tag(s) {} not present for any revisions of service {service}",
            missing.join(", ")
        ));
    }
    for t in &mut targets {
        if t.tag.as_ref().is_some_and(|tag| untags.contains(tag)) {
            t.tag = None;
        }
    }

    // 2. Tag: @latest first, then revisions.
    let mut tag_pairs = split_list(&flags.tags)
        .iter()
        .map(|v| pair(v))
        .collect::<Result<Vec<_>, _>>()?;
    if tag_pairs.iter().filter(|(r, _)| r == LATEST).count() > 1 {
        return Err(
            "repetition of identifier @latest is not allowed, use only once with --tag flag".into(),
        );
    }
    tag_pairs.sort_by_key(|(r, _)| r != LATEST);
    for (rev, tag) in tag_pairs {
        if targets
            .iter()
            .any(|t| t.tag.as_deref() == Some(tag.as_str()))
        {
            return Err(format!(
                "refusing to overwrite existing tag in service, add flag '--untag {tag}' in command to untag it"
            ));
        }
        if rev == LATEST {
            match targets.iter_mut().find(|t| is_latest(t)) {
                Some(t) if t.tag.is_none() => t.tag = Some(tag),
                Some(t) => {
                    let old = t.tag.clone().unwrap_or_default();
                    return Err(format!(
                        "tag '{old}' exists on latest ready revision of service, refusing to overwrite existing tag with '{tag}', add flag '--untag {old}' in command to untag it"
                    ));
                }
                None => targets.push(TrafficTarget {
                    tag: Some(tag),
                    ..latest_target()
                }),
            }
        } else {
            match targets
                .iter_mut()
                .find(|t| t.revision_name.as_deref() == Some(rev.as_str()) && t.tag.is_none())
            {
                Some(t) => t.tag = Some(tag),
                None => targets.push(TrafficTarget {
                    tag: Some(tag),
                    ..revision_target(&rev)
                }),
            }
        }
    }

    // 3. Traffic: the given split replaces every percent.
    let traffic = split_list(&flags.traffic);
    if !traffic.is_empty() {
        let mut seen = BTreeSet::new();
        let mut wanted: Vec<(String, i64)> = Vec::new();
        for value in &traffic {
            let (reference, pct) = pair(value)?;
            let pct_text = pct.trim_end_matches('%');
            let pct: i64 = pct_text.parse().map_err(|_| {
                format!(
                    "error converting given {pct_text} to integer value for traffic distribution"
                )
            })?;
            if !(0..=100).contains(&pct) {
                return Err(format!(
                    "invalid value for traffic percent {pct}, expected 0 <= percent <= 100"
                ));
            }
            if !seen.insert(reference.clone()) {
                return Err(if reference == LATEST {
                    "repetition of identifier @latest is not allowed, use only once with --traffic flag".into()
                } else {
                    format!(
                        "repetition of revision reference {reference} is not allowed, use only once with --traffic flag"
                    )
                });
            }
            wanted.push((reference, pct));
        }
        let sum: i64 = wanted.iter().map(|(_, p)| p).sum();
        if sum > 100 {
            return Err(format!("given traffic percents sum to {sum}, want <=100"));
        }
        for t in &mut targets {
            t.percent = Some(0);
        }
        for (reference, pct) in &wanted {
            set_percent(&mut targets, reference, *pct);
        }
        if sum < 100 {
            fill_remainder(&mut targets, status, &wanted, 100 - sum, new_revision)?;
        }
    }

    // Untagged targets with no traffic go.
    targets.retain(|t| t.tag.is_some() || t.percent.unwrap_or(0) > 0);
    Ok(targets)
}

/// kn's rule for the rest of a split that sums below 100, with N the routed entries in status:
/// without a new revision exactly N-1 references are given and the one routed entry left out
/// takes the rest; with a new revision N are given, and the rest goes to `@latest` unless it
/// was given, in which case the routed entry left out takes it.
fn fill_remainder(
    targets: &mut Vec<TrafficTarget>,
    status: &[TrafficTarget],
    wanted: &[(String, i64)],
    remaining: i64,
    new_revision: bool,
) -> Result<(), String> {
    let incorrect = || {
        format!(
            "unable to allocate the remaining traffic: {remaining}%. Reason: incorrect number of revisions specified. Only 1 revision should be missing"
        )
    };
    let undetermined = || {
        format!(
            "unable to allocate the remaining traffic: {remaining}%. Reason: cannot determine the missing revision"
        )
    };
    let routed = status.len();
    let latest_given = wanted.iter().any(|(r, _)| r == LATEST);
    if new_revision && !latest_given {
        set_percent(targets, LATEST, remaining);
        return Ok(());
    }
    let expected = if new_revision {
        routed
    } else {
        routed.saturating_sub(1)
    };
    if wanted.len() != expected {
        return Err(incorrect());
    }
    // What each given reference names, as `@latest` or a revision name.
    let named: Vec<String> = wanted
        .iter()
        .map(|(r, _)| {
            match targets
                .iter()
                .find(|t| t.tag.as_deref() == Some(r.as_str()))
            {
                Some(t) if is_latest(t) => LATEST.to_owned(),
                Some(t) => t.revision_name.clone().unwrap_or_default(),
                None => r.clone(),
            }
        })
        .collect();
    let left_out: Vec<&TrafficTarget> = status
        .iter()
        .filter(|t| {
            let key = if is_latest(t) {
                LATEST
            } else {
                t.revision_name.as_deref().unwrap_or_default()
            };
            !(named.iter().any(|n| n == key) || new_revision && is_latest(t))
        })
        .collect();
    let [missing] = left_out.as_slice() else {
        return Err(undetermined());
    };
    let reference = if is_latest(missing) {
        LATEST.to_owned()
    } else {
        missing.revision_name.clone().unwrap_or_default()
    };
    set_percent(targets, &reference, remaining);
    Ok(())
}

/// Sets the percent of the target `reference` names: a tag first, then `@latest`, then a
/// revision name (appended when no target has it).
fn set_percent(targets: &mut Vec<TrafficTarget>, reference: &str, pct: i64) {
    if let Some(t) = targets
        .iter_mut()
        .find(|t| t.tag.as_deref() == Some(reference))
    {
        t.percent = Some(pct);
    } else if reference == LATEST {
        match targets.iter_mut().find(|t| is_latest(t) && t.tag.is_none()) {
            Some(t) => t.percent = Some(pct),
            None => targets.push(TrafficTarget {
                percent: Some(pct),
                ..latest_target()
            }),
        }
    } else {
        match targets
            .iter_mut()
            .find(|t| t.revision_name.as_deref() == Some(reference) && t.tag.is_none())
        {
            Some(t) => t.percent = Some(pct),
            None => targets.push(TrafficTarget {
                percent: Some(pct),
                ..revision_target(reference)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(traffic: &[&str], tags: &[&str], untags: &[&str]) -> TrafficFlags {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
        TrafficFlags {
            traffic: v(traffic),
            tags: v(tags),
            untags: v(untags),
        }
    }

    fn rev(name: &str, pct: i64, tag: Option<&str>) -> TrafficTarget {
        TrafficTarget {
            percent: Some(pct),
            tag: tag.map(Into::into),
            ..revision_target(name)
        }
    }

    fn latest(pct: i64, tag: Option<&str>) -> TrafficTarget {
        TrafficTarget {
            percent: Some(pct),
            tag: tag.map(Into::into),
            ..latest_target()
        }
    }

    fn status_rev(name: &str, pct: i64, latest: bool) -> TrafficTarget {
        TrafficTarget {
            revision_name: Some(name.into()),
            percent: Some(pct),
            latest_revision: Some(latest),
            ..Default::default()
        }
    }

    #[test]
    fn fifty_fifty_between_old_and_latest() {
        let out = compute(
            "hello",
            &[latest(100, None)],
            &[status_rev("hello-00002", 100, true)],
            &flags(&["hello-00001=50", "@latest=50"], &[], &[]),
            false,
        )
        .unwrap();
        assert_eq!(out, vec![latest(50, None), rev("hello-00001", 50, None)]);
    }

    #[test]
    fn blue_green_tag_then_shift() {
        // Tag the new (latest) revision green at 0%, keep blue at 100%.
        let spec = vec![rev("demo-00001", 100, Some("blue"))];
        let out = compute(
            "demo",
            &spec,
            &[],
            &flags(&[], &["@latest=green"], &[]),
            true,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                rev("demo-00001", 100, Some("blue")),
                latest(0, Some("green"))
            ]
        );
        let out = compute(
            "demo",
            &out,
            &[],
            &flags(&["blue=50", "green=50"], &[], &[]),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                rev("demo-00001", 50, Some("blue")),
                latest(50, Some("green"))
            ]
        );
        let out = compute("demo", &out, &[], &flags(&["green=100"], &[], &[]), false).unwrap();
        assert_eq!(
            out,
            vec![
                rev("demo-00001", 0, Some("blue")),
                latest(100, Some("green"))
            ]
        );
    }

    #[test]
    fn remainder_goes_to_the_one_missing_revision() {
        let spec = vec![
            rev("a", 50, Some("stable")),
            rev("b", 40, Some("staging")),
            rev("c", 10, None),
        ];
        let status = vec![
            status_rev("a", 50, false),
            status_rev("b", 40, false),
            status_rev("c", 10, false),
        ];
        // Two of three routed entries named (by tag): the third takes the rest.
        let out = compute(
            "svc",
            &spec,
            &status,
            &flags(&["stable=50", "staging=40"], &[], &[]),
            false,
        )
        .unwrap();
        assert_eq!(out[2], rev("c", 10, None));
        // With a new revision and no @latest given, the rest goes to @latest.
        let out = compute(
            "svc",
            &[latest(100, None)],
            &[status_rev("svc-00001", 100, true)],
            &flags(&["svc-00001=45"], &[], &[]),
            true,
        )
        .unwrap();
        assert_eq!(out, vec![latest(55, None), rev("svc-00001", 45, None)]);
    }

    #[test]
    fn kn_error_messages() {
        let err = |f: TrafficFlags| {
            compute(
                "svc",
                &[latest(100, None)],
                &[status_rev("svc-00001", 100, true)],
                &f,
                false,
            )
            .unwrap_err()
        };
        assert_eq!(
            err(flags(&["a=60", "b=50"], &[], &[])),
            "given traffic percents sum to 110, want <=100"
        );
        assert_eq!(
            err(flags(&["a=x"], &[], &[])),
            "error converting given x to integer value for traffic distribution"
        );
        assert_eq!(
            err(flags(&["a=101"], &[], &[])),
            "invalid value for traffic percent 101, expected 0 <= percent <= 100"
        );
        assert_eq!(
            err(flags(&["a=10", "a=20"], &[], &[])),
            "repetition of revision reference a is not allowed, use only once with --traffic flag"
        );
        assert_eq!(
            err(flags(&["=10"], &[], &[])),
            "expecting the value format in value1=value2, given =10"
        );
        assert_eq!(
            err(flags(&[], &[], &["nope"])),
            "tag(s) nope not present for any revisions of service svc"
        );
        assert_eq!(
            err(flags(&["a=10", "b=10"], &[], &[])),
            "unable to allocate the remaining traffic: 80%. Reason: incorrect number of revisions specified. Only 1 revision should be missing"
        );
        let twice = [status_rev("a", 50, false), status_rev("a", 50, false)];
        assert_eq!(
            compute(
                "svc",
                &[rev("a", 100, None)],
                &twice,
                &flags(&["a=10"], &[], &[]),
                false
            )
            .unwrap_err(),
            "unable to allocate the remaining traffic: 90%. Reason: cannot determine the missing revision"
        );
        let tagged = compute(
            "svc",
            &[latest(100, Some("cur"))],
            &[],
            &flags(&[], &["@latest=new"], &[]),
            false,
        )
        .unwrap_err();
        assert!(
            tagged.starts_with("tag 'cur' exists on latest ready revision of service"),
            "{tagged}"
        );
        let taken = compute(
            "svc",
            &[rev("a", 100, Some("x"))],
            &[],
            &flags(&[], &["b=x"], &[]),
            false,
        )
        .unwrap_err();
        assert_eq!(
            taken,
            "refusing to overwrite existing tag in service, add flag '--untag x' in command to untag it"
        );
    }

    #[test]
    fn untag_runs_before_tag_and_zero_untagged_targets_go() {
        let spec = vec![
            rev("a", 100, Some("current")),
            rev("b", 0, Some("candidate")),
        ];
        let out = compute(
            "svc",
            &spec,
            &[],
            &flags(&[], &["b=current"], &["current", "candidate"]),
            false,
        )
        .unwrap();
        assert_eq!(out, vec![rev("a", 100, None), rev("b", 0, Some("current"))]);
        let out = compute(
            "svc",
            &out,
            &[],
            &flags(&["a=100"], &[], &["current"]),
            false,
        )
        .unwrap();
        assert_eq!(out, vec![rev("a", 100, None)]);
    }
}
