//! `config/crds` must be exactly what the types generate; regenerate with
//! `cargo run -p sluice-api --bin crdgen` after changing a type.

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crds");
    for (file, want) in sluice_api::crd::all_yaml() {
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "config/crds/{file} differs from the types; run `cargo run -p sluice-api --bin crdgen`"
        );
    }
}
