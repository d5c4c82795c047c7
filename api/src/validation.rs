//! Validation with field paths. Every error names the field and says what would be valid,
//! e.g. `spec.traffic: Traffic targets sum to 90, want 100`.

use std::fmt;

use crate::config::DefaultsConfig;
use crate::names;
use crate::revision::RevisionSpec;
use crate::route::TrafficTarget;
use crate::template::{Container, RevisionTemplateSpec};

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.template.spec.containerConcurrency`.
    pub path: String,
    /// What is wrong, and the fix when it is not obvious.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All invalid fields of one object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// `Service default/hello`, for messages.
    pub object: String,
    /// The invalid fields, in the order found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid:", self.object)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects field errors under a path prefix.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub(crate) fn into_result(self, object: String) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                object,
                errors: self.0,
            })
        }
    }
}

/// Ports the queue-proxy and its peers own; a user process may not serve on them.
pub use crate::contract::RESERVED_PORTS;
/// Environment variables Sluice sets for the user process.
pub use crate::contract::user_env::RESERVED as RESERVED_ENV;

/// Validates a revision template of a Service or Configuration named `parent`.
pub(crate) fn template(
    errs: &mut Errors,
    path: &str,
    parent: &str,
    tpl: &RevisionTemplateSpec,
    defaults: &DefaultsConfig,
) {
    if let Some(name) = &tpl.metadata.name {
        let p = format!("{path}.metadata.name");
        if let Err(msg) = names::check_dns1035_label(name) {
            errs.push(&p, msg);
        } else if !name.starts_with(&format!("{parent}-")) {
            errs.push(&p, format!("{name:?} must have prefix \"{parent}-\""));
        }
    }
    crate::autoscaling::validate(
        errs,
        &format!("{path}.metadata.annotations"),
        &tpl.metadata.annotations,
    );
    revision_spec(errs, &format!("{path}.spec"), &tpl.spec, defaults);
}

/// Validates a revision spec against Knative's rules.
pub(crate) fn revision_spec(
    errs: &mut Errors,
    path: &str,
    spec: &RevisionSpec,
    defaults: &DefaultsConfig,
) {
    if spec.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            "missing: give one container to run",
        );
    }
    let serving = spec
        .containers
        .iter()
        .filter(|c| !c.ports.is_empty())
        .count();
    if spec.containers.len() > 1 && serving != 1 {
        errs.push(
            format!("{path}.containers"),
            "with more than one container, exactly one must declare a port (the serving container)",
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container(errs, &format!("{path}.containers[{i}]"), c);
    }
    let max_cc = defaults.container_concurrency_max_limit;
    if let Some(cc) = spec.container_concurrency {
        if !(0..=max_cc).contains(&cc) {
            errs.push(
                format!("{path}.containerConcurrency"),
                format!(
                    "expected 0 <= {cc} <= {max_cc}; use 0 for no limit or a value up to {max_cc}"
                ),
            );
        } else if cc == 0 && !defaults.allow_container_concurrency_zero {
            errs.push(
                format!("{path}.containerConcurrency"),
                "0 is not allowed by config-defaults",
            );
        }
    }
    let max_t = defaults.max_revision_timeout_seconds;
    for (field, value) in [
        ("timeoutSeconds", spec.timeout_seconds),
        (
            "responseStartTimeoutSeconds",
            spec.response_start_timeout_seconds,
        ),
        ("idleTimeoutSeconds", spec.idle_timeout_seconds),
    ] {
        if let Some(t) = value
            && !(0..=max_t).contains(&t)
        {
            errs.push(
                format!("{path}.{field}"),
                format!("expected 0 <= {t} <= {max_t} (max-revision-timeout-seconds)"),
            );
        }
    }
    if let (Some(rs), Some(t)) = (spec.response_start_timeout_seconds, spec.timeout_seconds)
        && rs > t
        && t > 0
    {
        errs.push(
            format!("{path}.responseStartTimeoutSeconds"),
            format!("{rs} exceeds timeoutSeconds ({t})"),
        );
    }
    if let Some(sa) = &spec.service_account_name
        && let Err(msg) = names::check_dns1123_subdomain(sa)
    {
        errs.push(format!("{path}.serviceAccountName"), msg);
    }
}

fn container(errs: &mut Errors, path: &str, c: &Container) {
    if let Some(name) = &c.name
        && let Err(msg) = names::check_dns1123_label(name)
    {
        errs.push(format!("{path}.name"), msg);
    }
    if c.ports.len() > 1 {
        errs.push(
            format!("{path}.ports"),
            "more than one container port is set; a revision serves on exactly one port",
        );
    }
    for (i, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            errs.push(
                format!("{pp}.containerPort"),
                format!("{} is not within 1..=65535", p.container_port),
            );
        } else if RESERVED_PORTS.contains(&p.container_port) {
            errs.push(
                format!("{pp}.containerPort"),
                format!(
                    "{} is reserved (8012, 8013, 8022, 9090, 9091, 8008 belong to the queue-proxy); pick another port",
                    p.container_port
                ),
            );
        }
        if let Some(name) = &p.name
            && !matches!(name.as_str(), "" | "h2c" | "http1")
        {
            errs.push(
                format!("{pp}.name"),
                format!("{name:?} is not allowed; use h2c, http1 or leave it empty"),
            );
        }
        if p.host_port.is_some() {
            errs.push(
                format!("{pp}.hostPort"),
                "hostPort is not allowed; remove it",
            );
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        if RESERVED_ENV.contains(&e.name.as_str()) {
            errs.push(
                format!("{path}.env[{i}].name"),
                format!(
                    "{} is a reserved environment variable set by Sluice; remove it",
                    e.name
                ),
            );
        } else if e.name.is_empty() {
            errs.push(
                format!("{path}.env[{i}].name"),
                "missing: every env entry needs a name",
            );
        }
    }
}

/// Validates a traffic block. `in_service` forbids `configurationName`.
pub(crate) fn traffic(errs: &mut Errors, path: &str, targets: &[TrafficTarget], in_service: bool) {
    let mut sum = 0i64;
    let mut tags: Vec<&str> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let tp = format!("{path}[{i}]");
        if let Some(p) = t.percent {
            if !(0..=100).contains(&p) {
                errs.push(format!("{tp}.percent"), format!("expected 0 <= {p} <= 100"));
            }
            sum += p;
        }
        match (&t.revision_name, &t.configuration_name) {
            (Some(_), Some(_)) => errs.push(
                &tp,
                "expected exactly one, got both: revisionName, configurationName",
            ),
            (None, Some(_)) if in_service => errs.push(
                format!("{tp}.configurationName"),
                "not allowed in a Service; its own configuration is the default (use latestRevision: true)",
            ),
            (None, None) if !in_service && t.latest_revision != Some(true) => errs.push(
                &tp,
                "expected exactly one, got neither: revisionName, configurationName",
            ),
            _ => {}
        }
        if let Some(rev) = &t.revision_name
            && let Err(msg) = names::check_dns1123_subdomain(rev)
        {
            errs.push(format!("{tp}.revisionName"), msg);
        }
        match (t.latest_revision, &t.revision_name) {
            (Some(true), Some(rev)) => errs.push(
                format!("{tp}.latestRevision"),
                format!("may not set revisionName {rev:?} when latestRevision is true"),
            ),
            (Some(false), None) if t.configuration_name.is_none() => errs.push(
                format!("{tp}.latestRevision"),
                "may not set revisionName \"\" when latestRevision is false",
            ),
            _ => {}
        }
        if t.url.is_some() {
            errs.push(
                format!("{tp}.url"),
                "must not be set in spec (it is reported in status)",
            );
        }
        if let Some(tag) = &t.tag {
            if let Err(msg) = names::check_dns1035_label(tag) {
                errs.push(format!("{tp}.tag"), msg);
            } else if tags.contains(&tag.as_str()) {
                errs.push(
                    format!("{tp}.tag"),
                    format!("Multiple definitions for {tag:?}"),
                );
            }
            tags.push(tag);
        }
    }
    if !targets.is_empty() && sum != 100 {
        errs.push(path, format!("Traffic targets sum to {sum}, want 100"));
    }
}
