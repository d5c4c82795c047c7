//! config-network: host name templates and rollout duration.

use std::time::Duration;

use super::{ConfigData, ConfigError, Reader};

/// Typed config-network (the keys Sluice acts on).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// `domain-template` (`{{.Name}}.{{.Namespace}}.{{.Domain}}`).
    pub domain_template: String,
    /// `tag-template` (`{{.Tag}}-{{.Name}}`).
    pub tag_template: String,
    /// `rollout-duration` (0).
    pub rollout_duration: Duration,
    /// `default-external-scheme` (`http`).
    pub default_external_scheme: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            domain_template: "{{.Name}}.{{.Namespace}}.{{.Domain}}".to_owned(),
            tag_template: "{{.Tag}}-{{.Name}}".to_owned(),
            rollout_duration: Duration::ZERO,
            default_external_scheme: "http".to_owned(),
        }
    }
}

impl NetworkConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-network";

    /// Parses and checks config-network.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new(Self::NAME, data);
        let d = Self::default();
        let cfg = Self {
            domain_template: r
                .string("domain-template")
                .unwrap_or(&d.domain_template)
                .to_owned(),
            tag_template: r
                .string("tag-template")
                .or_else(|| r.string("tagTemplate"))
                .unwrap_or(&d.tag_template)
                .to_owned(),
            rollout_duration: r.duration("rollout-duration", d.rollout_duration)?,
            default_external_scheme: r
                .string("default-external-scheme")
                .unwrap_or(&d.default_external_scheme)
                .to_owned(),
        };
        for (key, template, must) in [
            ("domain-template", &cfg.domain_template, "{{.Name}}"),
            ("tag-template", &cfg.tag_template, "{{.Tag}}"),
        ] {
            if !template.contains(must) {
                return Err(r.error(key, format!("{template:?} must contain {must}")));
            }
        }
        if !matches!(cfg.default_external_scheme.as_str(), "http" | "https") {
            return Err(r.error("default-external-scheme", "must be http or https"));
        }
        Ok(cfg)
    }

    /// The host of a route: the domain template filled in.
    pub fn host(&self, name: &str, namespace: &str, domain: &str) -> String {
        self.domain_template
            .replace("{{.Name}}", name)
            .replace("{{.Namespace}}", namespace)
            .replace("{{.Domain}}", domain)
    }

    /// The host of a tag of a route: the tag template, then the domain template.
    pub fn tag_host(&self, tag: &str, name: &str, namespace: &str, domain: &str) -> String {
        let tagged = self
            .tag_template
            .replace("{{.Tag}}", tag)
            .replace("{{.Name}}", name);
        self.host(&tagged, namespace, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_templates_build_knative_hosts() {
        let cfg = NetworkConfig::default();
        assert_eq!(
            cfg.host("hello", "default", "localhost"),
            "hello.default.localhost"
        );
        assert_eq!(
            cfg.tag_host("green", "hello", "default", "example.com"),
            "green-hello.default.example.com"
        );
    }

    #[test]
    fn template_without_name_is_rejected() {
        let data = ConfigData::from([("domain-template".into(), "{{.Namespace}}.x".into())]);
        assert_eq!(
            NetworkConfig::parse(&data).unwrap_err().key,
            "domain-template"
        );
    }
}
