//! Name rules: DNS label checks and the names of children (`hello-00001`).

use md5::{Digest, Md5};

/// Longest Kubernetes object name that is also a DNS label.
pub const MAX_LABEL: usize = 63;

/// Checks a DNS-1123 label: lowercase alphanumerics and '-', alphanumeric at both ends.
pub fn check_dns1123_label(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_LABEL || !ok_chars || !ok_ends {
        return Err(format!(
            "invalid value {name:?}: a DNS-1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters (e.g. 'my-name')"
        ));
    }
    Ok(())
}

/// Checks a DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn check_dns1035_label(name: &str) -> Result<(), String> {
    let ok = check_dns1123_label(name).is_ok()
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !ok {
        return Err(format!(
            "invalid value {name:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, end with an alphanumeric character, and be at most 63 characters (e.g. 'my-name')"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn check_dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 253
        || name.split('.').any(|l| check_dns1123_label(l).is_err())
    {
        return Err(DNS1123_SUBDOMAIN_RULE.to_owned());
    }
    Ok(())
}

/// What a DNS-1123 subdomain must be, in Kubernetes' words (apimachinery's
/// `IsDNS1123Subdomain`, which Knative's errors quote).
pub const DNS1123_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Knative's `kmeta.ChildName`: `parent + suffix`, with the parent shortened and an md5 of it
/// inserted when the result would exceed 63 characters.
pub fn child_name(parent: &str, suffix: &str) -> String {
    let joined = format!("{parent}{suffix}");
    if joined.len() <= MAX_LABEL {
        return joined;
    }
    const MD5_HEX: usize = 32;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let head = MAX_LABEL.saturating_sub(suffix.len());
    if head <= MD5_HEX {
        return hex(&Md5::digest(joined.as_bytes()));
    }
    let digest = hex(&Md5::digest(parent.as_bytes()));
    let mut name = format!("{}{digest}", &parent[..head - MD5_HEX]);
    if let Some(rest) = suffix.strip_prefix('-')
        && name.ends_with('-')
    {
        name.push_str(rest);
        return name;
    }
    name.push_str(suffix);
    name
}

/// The generated name of a configuration's revision at `generation`: `hello-00001`.
pub fn revision_name(configuration: &str, generation: i64) -> String {
    child_name(configuration, &format!("-{generation:05}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_names_are_zero_padded() {
        assert_eq!(revision_name("hello", 1), "hello-00001");
        assert_eq!(revision_name("hello", 123456), "hello-123456");
    }

    #[test]
    fn long_child_names_are_hashed_to_63() {
        let parent = "a".repeat(62);
        let name = revision_name(&parent, 2);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-00002"));
        assert_ne!(revision_name(&"b".repeat(62), 2), name);
    }

    #[test]
    fn label_checks() {
        assert!(check_dns1035_label("hello").is_ok());
        assert!(check_dns1035_label("1hello").is_err());
        assert!(check_dns1123_label("1hello").is_ok());
        assert!(check_dns1123_label("Hello").is_err());
        assert!(check_dns1123_label("hello-").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
        assert!(check_dns1123_subdomain("foo@bar.baz").is_err());
        assert!(check_dns1123_subdomain("foo.bar").is_ok());
    }
}
