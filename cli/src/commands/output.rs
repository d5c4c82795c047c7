//! Output: kn-style tables, ages, and `-o json|yaml` for machines.

use clap::ValueEnum;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use sluice_api::Condition;
use sluice_api::condition::ConditionStatus;

/// Machine-readable output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints a value as JSON or YAML.
pub fn print(format: Format, value: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// A Kubernetes `List` of items, as `-o` prints lists.
pub fn list(items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// Prints rows under upper-case headers, columns padded by three spaces (kn's layout).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// kn's short age: `45s`, `2m42s`, `5m`, `3h12m`, `2d`.
pub fn age(meta: &ObjectMeta) -> String {
    let Some(created) = &meta.creation_timestamp else {
        return String::new();
    };
    let secs = jiff::Timestamp::now()
        .duration_since(created.0)
        .as_secs()
        .max(0);
    short_duration(secs)
}

/// Formats seconds the way kubectl and kn do.
pub fn short_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// kn's CONDITIONS, READY and REASON columns.
pub fn condition_columns(conditions: &[Condition]) -> (String, String, String) {
    let ok = conditions.iter().filter(|c| c.is_true()).count();
    let summary = format!("{ok} OK / {}", conditions.len());
    let ready = sluice_api::condition::find(conditions, "Ready");
    let status = ready.map_or("<unknown>".to_owned(), |c| format!("{:?}", c.status));
    let reason = match ready {
        Some(c) if !c.is_true() => match (&c.reason, &c.message) {
            (Some(r), Some(m)) if !m.is_empty() => format!("{r} : {m}"),
            (Some(r), _) => r.clone(),
            (None, Some(m)) => m.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    // Table cells stay on one line; process output can span several.
    (summary, status, reason.replace('\n', " "))
}

/// kn's conditions table for describe.
pub fn conditions_table(conditions: &[Condition]) {
    let mut sorted: Vec<&Condition> = conditions.iter().collect();
    sorted.sort_by_key(|c| (c.type_ != "Ready", c.type_.clone()));
    println!("Conditions:");
    println!("  OK TYPE                   AGE REASON");
    for c in sorted {
        let ok = match c.status {
            ConditionStatus::True => "++",
            ConditionStatus::False => "!!",
            ConditionStatus::Unknown => "??",
        };
        let age = c
            .last_transition_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| short_duration(jiff::Timestamp::now().duration_since(t).as_secs().max(0)))
            .unwrap_or_default();
        let reason = c.reason.clone().unwrap_or_default();
        println!("  {ok} {:<22} {:>3} {reason}", c.type_, age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(162), "2m42s");
        assert_eq!(short_duration(3 * 3600 + 720), "3h12m");
        assert_eq!(short_duration(3 * 86400), "3d");
    }

    #[test]
    fn reason_column_joins_reason_and_message() {
        let (summary, ready, reason) = condition_columns(&[
            Condition::false_("Ready", "RevisionFailed", "boom"),
            Condition::true_("RoutesReady"),
        ]);
        assert_eq!(summary, "1 OK / 2");
        assert_eq!(ready, "False");
        assert_eq!(reason, "RevisionFailed : boom");
    }
}
