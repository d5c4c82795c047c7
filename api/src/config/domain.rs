//! config-domain: which domain a route's host ends in.

use std::collections::BTreeMap;

use super::{ConfigData, ConfigError, Reader};

/// Typed config-domain: domains, each with an optional label selector.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainConfig {
    /// Domain → labels a route must carry (empty = default domain).
    pub domains: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self::with_default("svc.cluster.local")
    }
}

impl DomainConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-domain";

    /// A config whose only entry is `domain` for every route.
    pub fn with_default(domain: &str) -> Self {
        Self {
            domains: BTreeMap::from([(domain.to_owned(), BTreeMap::new())]),
        }
    }

    /// Parses config-domain: each key a domain, each value empty or `selector:` labels.
    /// `fallback` is the domain used when no entry is a default.
    pub fn parse(data: &ConfigData, fallback: &str) -> Result<Self, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(default)]
            selector: BTreeMap<String, String>,
        }
        let r = Reader::new(Self::NAME, data);
        let mut domains = BTreeMap::new();
        for (domain, value) in data {
            let selector = if value.trim().is_empty() {
                BTreeMap::new()
            } else {
                serde_yaml::from_str::<Entry>(value)
                    .map_err(|e| r.error(domain, format!("want empty or `selector:` labels: {e}")))?
                    .selector
            };
            domains.insert(domain.clone(), selector);
        }
        if !domains.values().any(BTreeMap::is_empty) {
            domains.insert(fallback.to_owned(), BTreeMap::new());
        }
        Ok(Self { domains })
    }

    /// The domain for a route with these labels: the most specific matching selector wins,
    /// ties going to the lexicographically smaller domain.
    pub fn domain_for(&self, labels: &BTreeMap<String, String>) -> &str {
        self.domains
            .iter()
            .filter(|(_, sel)| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .max_by(|(da, sa), (db, sb)| sa.len().cmp(&sb.len()).then(db.cmp(da)))
            .map(|(d, _)| d.as_str())
            .unwrap_or("svc.cluster.local")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_selector_wins() {
        let data = ConfigData::from([
            ("example.com".into(), "".into()),
            ("prod.example.com".into(), "selector:\n  env: prod\n".into()),
        ]);
        let cfg = DomainConfig::parse(&data, "localhost").unwrap();
        let prod = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        assert_eq!(cfg.domain_for(&prod), "prod.example.com");
        assert_eq!(cfg.domain_for(&BTreeMap::new()), "example.com");
    }

    #[test]
    fn fallback_used_without_default_entry() {
        let cfg = DomainConfig::parse(&ConfigData::new(), "localhost").unwrap();
        assert_eq!(cfg.domain_for(&BTreeMap::new()), "localhost");
    }
}
