//! config-features: feature flags, with Knative's `Enabled` / `Disabled` / `Allowed` values.

use super::{ConfigData, ConfigError, Reader};

/// Typed config-features (the flags Sluice acts on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeaturesConfig {
    /// `tag-header-based-routing` (Disabled): route by the `Knative-Serving-Tag` header.
    pub tag_header_based_routing: bool,
    /// The `kubernetes.podspec-*` and `multi-container*` flags: which PodSpec fields
    /// admission accepts.
    pub pod_spec: crate::validation::PodSpecFeatures,
}

impl FeaturesConfig {
    /// The config map's name.
    pub const NAME: &'static str = "config-features";

    /// Parses config-features.
    pub fn parse(data: &ConfigData) -> Result<Self, ConfigError> {
        let r = Reader::new(Self::NAME, data);
        let flag = |key: &str| match r.string(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "enabled" | "allowed" => Ok(true),
                "disabled" => Ok(false),
                _ => Err(r.error(key, format!("{v:?} is not Enabled, Disabled or Allowed"))),
            },
        };
        Ok(Self {
            tag_header_based_routing: flag("tag-header-based-routing")?,
            pod_spec: crate::validation::PodSpecFeatures::parse(data)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_header_routing_is_off_by_default() {
        assert!(
            !FeaturesConfig::parse(&ConfigData::new())
                .unwrap()
                .tag_header_based_routing
        );
        let on = ConfigData::from([("tag-header-based-routing".into(), "Enabled".into())]);
        assert!(FeaturesConfig::parse(&on).unwrap().tag_header_based_routing);
        let bad = ConfigData::from([("tag-header-based-routing".into(), "yes".into())]);
        assert_eq!(
            FeaturesConfig::parse(&bad).unwrap_err().key,
            "tag-header-based-routing"
        );
    }
}
