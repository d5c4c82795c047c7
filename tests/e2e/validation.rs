//! Invalid manifests: a non-zero exit, a message naming the field, nothing stored.

use crate::harness::{Platform, service_yaml};

fn rejected(p: &Platform, yaml: &str, field: &str) {
    let out = p.apply(yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{yaml}");
    assert!(
        stderr.contains(field),
        "error does not name {field}:\n{stderr}"
    );
}

#[test]
fn invalid_manifests_are_rejected_and_store_nothing() {
    let p = Platform::start();
    let good = service_yaml("hello", "env", "m-invalid", "x", "");
    rejected(
        &p,
        &good.replace("name: hello", "name: Hello_World"),
        "metadata.name",
    );
    rejected(
        &p,
        &good.replace(
            "            - containerPort: 8080\n",
            "            - containerPort: 8080\n            - containerPort: 8081\n",
        ),
        "spec.template.spec.containers[0].ports",
    );
    rejected(
        &p,
        &service_yaml(
            "hello",
            "env",
            "m",
            "x",
            "      containerConcurrency: 5000\n",
        ),
        "spec.template.spec.containerConcurrency",
    );
    rejected(
        &p,
        &good.replace("serving.knative.dev/v1", "serving.knative.dev/v2"),
        "apiVersion",
    );
    rejected(
        &p,
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: [oops\n",
        "not valid YAML",
    );
    let image_only = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: img\nspec:\n  template:\n    spec:\n      containers:\n        - image: ghcr.io/knative/helloworld-go\n";
    rejected(&p, image_only, "spec.template.spec.containers[0].command");
    // A good document followed by a bad one: nothing from the file is stored.
    rejected(
        &p,
        &format!(
            "{good}---\n{}",
            good.replace("name: hello", "name: Bad_Name")
        ),
        "metadata.name",
    );

    assert_eq!(p.ok(&["service", "list"]).trim(), "No services found.");
    assert_eq!(p.ok(&["revision", "list"]).trim(), "No revisions found.");
}

#[test]
fn byo_revision_names_must_change_with_the_template() {
    let p = Platform::start();
    let named = |target: &str, revision: &str| {
        service_yaml("byo", "env", "m-byo", target, "").replace(
            "  template:\n    spec:\n",
            &format!("  template:\n    metadata:\n      name: {revision}\n    spec:\n"),
        )
    };
    assert!(p.apply(&named("one", "byo-first")).status.success());
    p.eventually(std::time::Duration::from_secs(10), "byo ready", || {
        p.is_ready("byo")
    });
    let before = p.service_json("byo")["spec"].clone();
    rejected(
        &p,
        &named("two", "byo-first"),
        "spec.template.metadata.name",
    );
    rejected(&p, &named("two", "other-name"), "must have prefix \"byo-\"");
    assert_eq!(p.service_json("byo")["spec"], before);
    assert!(p.apply(&named("two", "byo-second")).status.success());
    p.eventually(
        std::time::Duration::from_secs(10),
        "byo-second serves",
        || {
            p.get("byo.default.localhost", "/")
                .1
                .contains("K_REVISION=byo-second\n")
        },
    );
    let describe = p.ok(&["service", "describe", "byo"]);
    assert!(describe.contains("@latest (byo-second)"), "{describe}");
}
