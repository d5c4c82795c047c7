//! Manifests in, objects out: multi-document YAML (or JSON) parsed into typed objects, with
//! defaulting and validation as the admission step.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::config::DefaultsConfig;
use crate::validation::{self, Errors, ValidationError};
use crate::{API_VERSION, Configuration, Revision, Route, Service, defaults};

/// The kinds of object Sluice stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    /// serving.knative.dev/v1 Service.
    Service,
    /// serving.knative.dev/v1 Configuration.
    Configuration,
    /// serving.knative.dev/v1 Route.
    Route,
    /// serving.knative.dev/v1 Revision.
    Revision,
}

impl ObjectKind {
    /// All kinds, parents before children.
    pub const ALL: [ObjectKind; 4] = [
        Self::Service,
        Self::Configuration,
        Self::Route,
        Self::Revision,
    ];

    /// The `kind` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::Configuration => "Configuration",
            Self::Route => "Route",
            Self::Revision => "Revision",
        }
    }

    /// The lowercase plural used in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Service => "services",
            Self::Configuration => "configurations",
            Self::Route => "routes",
            Self::Revision => "revisions",
        }
    }

    /// Parses a `kind` value or an API path plural.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text || k.plural() == text)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of any stored kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Service),
    /// A Configuration.
    Configuration(Configuration),
    /// A Route.
    Route(Route),
    /// A Revision.
    Revision(Revision),
}

/// A manifest that could not be read: which document and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML or JSON at all.
    #[error("document {doc}: not valid YAML: {message}")]
    Syntax {
        /// 1-based document number.
        doc: usize,
        /// The parser's words, with line and column.
        message: String,
    },
    /// Well-formed, but not an object Sluice takes.
    #[error("document {doc}: {path}: {message}")]
    Shape {
        /// 1-based document number.
        doc: usize,
        /// The offending field.
        path: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Service(_) => ObjectKind::Service,
            Self::Configuration(_) => ObjectKind::Configuration,
            Self::Route(_) => ObjectKind::Route,
            Self::Revision(_) => ObjectKind::Revision,
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Service(o) => &o.metadata,
            Self::Configuration(o) => &o.metadata,
            Self::Route(o) => &o.metadata,
            Self::Revision(o) => &o.metadata,
        }
    }

    /// The object's metadata, mutably.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Service(o) => &mut o.metadata,
            Self::Configuration(o) => &mut o.metadata,
            Self::Route(o) => &mut o.metadata,
            Self::Revision(o) => &mut o.metadata,
        }
    }

    /// `metadata.name` (empty when missing).
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, `default` when missing.
    pub fn namespace(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or("default")
    }

    /// `Service default/hello`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind(), self.namespace(), self.name())
    }

    /// The object as JSON, `apiVersion` and `kind` included.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Self::Service(o) => serde_json::to_value(o),
            Self::Configuration(o) => serde_json::to_value(o),
            Self::Route(o) => serde_json::to_value(o),
            Self::Revision(o) => serde_json::to_value(o),
        };
        v.expect("API types always serialize")
    }

    /// Reads an object from JSON whose `kind` is known to be `kind`.
    pub fn from_json(
        kind: ObjectKind,
        value: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ObjectKind::Service => Self::Service(serde_json::from_value(value)?),
            ObjectKind::Configuration => Self::Configuration(serde_json::from_value(value)?),
            ObjectKind::Route => Self::Route(serde_json::from_value(value)?),
            ObjectKind::Revision => Self::Revision(serde_json::from_value(value)?),
        })
    }

    /// Reads a list, `{"items": [...]}` of objects of `kind`, straight from its bytes: no
    /// `Value` tree on the way (10,000 Services took 300 MB and most of a second through
    /// one).
    pub fn list_from_slice(kind: ObjectKind, bytes: &[u8]) -> Result<Vec<Self>, serde_json::Error> {
        #[derive(Deserialize)]
        struct List<T> {
            items: Vec<T>,
        }
        fn items<T: serde::de::DeserializeOwned>(
            bytes: &[u8],
            wrap: fn(T) -> Object,
        ) -> Result<Vec<Object>, serde_json::Error> {
            let list: List<T> = serde_json::from_slice(bytes)?;
            Ok(list.items.into_iter().map(wrap).collect())
        }
        match kind {
            ObjectKind::Service => items(bytes, Self::Service),
            ObjectKind::Configuration => items(bytes, Self::Configuration),
            ObjectKind::Route => items(bytes, Self::Route),
            ObjectKind::Revision => items(bytes, Self::Revision),
        }
    }

    /// Applies Knative's defaults.
    pub fn set_defaults(&mut self, cfg: &DefaultsConfig) {
        if self.meta().namespace.is_none() {
            self.meta_mut().namespace = Some("default".to_owned());
        }
        match self {
            Self::Service(s) => {
                defaults::revision_spec(&mut s.spec.template.spec, cfg);
                defaults::traffic(&mut s.spec.traffic, true);
            }
            Self::Configuration(c) => defaults::revision_spec(&mut c.spec.template.spec, cfg),
            Self::Route(r) => defaults::traffic(&mut r.spec.traffic, false),
            Self::Revision(_) => {}
        }
    }

    /// Validates a new object (or the new state of an existing one), with Knative's default
    /// feature flags (see [`validation::object`] for config-features' own).
    pub fn validate(&self, cfg: &DefaultsConfig) -> Result<(), ValidationError> {
        validation::object(self, cfg, &validation::PodSpecFeatures::default())
    }

    /// Validates an update against the stored object: a BYO revision name must change with the
    /// template, and a revision's spec never changes.
    pub fn validate_update(&self, old: &Object) -> Result<(), ValidationError> {
        let mut errs = Errors::default();
        let templates = match (old, self) {
            (Self::Service(o), Self::Service(n)) => Some((&o.spec.template, &n.spec.template)),
            (Self::Configuration(o), Self::Configuration(n)) => {
                Some((&o.spec.template, &n.spec.template))
            }
            (Self::Revision(o), Self::Revision(n)) if o.spec != n.spec => {
                errs.push("spec", "Immutable fields changed: a revision's spec never changes; change the Service or Configuration to stamp a new revision");
                None
            }
            _ => None,
        };
        if let Some((old_t, new_t)) = templates
            && let (Some(old_name), Some(new_name)) = (&old_t.metadata.name, &new_t.metadata.name)
            && old_name == new_name
            && old_t != new_t
        {
            errs.push(
                        "spec.template.metadata.name",
                        format!("Saw the following changes without a name change: the template changed but its name {new_name:?} did not; give the new revision a new name, or remove spec.template.metadata.name"),
                    );
        }
        errs.into_result(self.describe())
    }
}

/// Parses one or many YAML (or JSON) documents into objects. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            doc: n,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(parse_value(n, value)?);
    }
    Ok(out)
}

fn parse_value(doc: usize, value: serde_yaml::Value) -> Result<Object, ManifestError> {
    let shape = |path: &str, message: String| ManifestError::Shape {
        doc,
        path: path.to_owned(),
        message,
    };
    let field = |key: &str| {
        value
            .get(key)
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned)
    };
    let kind_text = field("kind").ok_or_else(|| {
        shape(
            "kind",
            "missing; want Service, Configuration or Route".into(),
        )
    })?;
    let api_version = field("apiVersion")
        .ok_or_else(|| shape("apiVersion", format!("missing; want {API_VERSION}")))?;
    let kind = ObjectKind::parse(&kind_text).filter(|k| k.as_str() == kind_text).ok_or_else(|| {
        shape("kind", format!("unknown kind {kind_text:?}; Sluice takes Service, Configuration and Route of {API_VERSION}"))
    })?;
    if api_version != API_VERSION {
        return Err(shape(
            "apiVersion",
            format!("unknown apiVersion {api_version:?} for kind {kind_text}; want {API_VERSION}"),
        ));
    }
    let json = serde_json::to_value(&value).map_err(|e| shape("", e.to_string()))?;
    Object::from_json(kind, json).map_err(|e| shape("", format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "World"
"#;

    fn service(yaml: &str) -> Object {
        let mut objs = parse_documents(yaml).unwrap();
        assert_eq!(objs.len(), 1);
        objs.remove(0)
    }

    #[test]
    fn hello_parses_defaults_and_validates() {
        let mut obj = service(HELLO);
        obj.set_defaults(&DefaultsConfig::default());
        obj.validate(&DefaultsConfig::default()).unwrap();
        assert_eq!(obj.namespace(), "default");
        let Object::Service(s) = obj else {
            panic!("not a service")
        };
        assert_eq!(s.spec.traffic[0].percent, Some(100));
        assert_eq!(s.spec.template.spec.timeout_seconds, Some(300));
    }

    #[test]
    fn unknown_api_version_names_the_field() {
        let err =
            parse_documents(&HELLO.replace("serving.knative.dev/v1", "serving.knative.dev/v2"))
                .unwrap_err();
        assert!(err.to_string().contains("apiVersion"), "{err}");
        assert!(err.to_string().contains("serving.knative.dev/v1"), "{err}");
    }

    #[test]
    fn broken_yaml_is_a_syntax_error() {
        let err = parse_documents("apiVersion: [unclosed\nkind: Service").unwrap_err();
        assert!(matches!(err, ManifestError::Syntax { doc: 1, .. }), "{err}");
    }

    #[test]
    fn two_ports_and_big_concurrency_are_rejected_with_paths() {
        let yaml = HELLO.replace(
            "            - containerPort: 8080\n",
            "            - containerPort: 8080\n            - containerPort: 8081\n",
        ) + "    \n";
        let mut obj = service(&yaml);
        if let Object::Service(s) = &mut obj {
            s.spec.template.spec.container_concurrency = Some(5000);
        }
        let err = obj.validate(&DefaultsConfig::default()).unwrap_err();
        let paths: Vec<_> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"spec.template.spec.containers[0].ports"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"spec.template.spec.containerConcurrency"),
            "{paths:?}"
        );
    }

    #[test]
    fn bad_name_and_reserved_env_are_rejected() {
        let mut obj = service(
            &HELLO
                .replace("name: hello", "name: Hello_World")
                .replace("name: TARGET", "name: PORT"),
        );
        obj.set_defaults(&DefaultsConfig::default());
        let err = obj.validate(&DefaultsConfig::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("metadata.name"), "{text}");
        assert!(
            text.contains("spec.template.spec.containers[0].env[0].name"),
            "{text}"
        );
    }

    #[test]
    fn traffic_must_sum_to_100() {
        let yaml = format!("{HELLO}  traffic:\n    - latestRevision: true\n      percent: 90\n");
        let err = service(&yaml)
            .validate(&DefaultsConfig::default())
            .unwrap_err();
        assert_eq!(
            err.errors[0].to_string(),
            "spec.traffic: Traffic targets sum to 90, want 100"
        );
    }

    #[test]
    fn byo_name_must_change_with_template() {
        let with_name = HELLO.replace(
            "  template:\n",
            "  template:\n    metadata:\n      name: hello-one\n",
        );
        let old = service(&with_name);
        let new = service(&with_name.replace("World", "Sluice"));
        let err = new.validate_update(&old).unwrap_err();
        assert_eq!(err.errors[0].path, "spec.template.metadata.name");
        assert!(service(&with_name).validate_update(&old).is_ok());
    }
}
