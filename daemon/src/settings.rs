//! Operator settings from Knative ConfigMap files in `$SLUICE_HOME/config/`, read at start and
//! re-read when a file changes; a bad value names the file and key and keeps the last good
//! settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_api::config::{ConfigData, Configs, parse_config_map};
use tokio::sync::watch;

/// Reads every config file under `dir`; `domain` is the default domain (`--domain`).
pub fn load(dir: &Path, domain: &str) -> anyhow::Result<Configs> {
    let mut data: BTreeMap<&str, ConfigData> = BTreeMap::new();
    for want in Configs::NAMES {
        let path = dir.join(format!("{want}.yaml"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (name, map) =
            parse_config_map(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if name != want {
            anyhow::bail!(
                "{}: metadata.name is {name:?}, want {want:?}",
                path.display()
            );
        }
        data.insert(want, map);
    }
    Configs::parse(|name| data.get(name).cloned().unwrap_or_default(), domain).map_err(|e| {
        let file = dir.join(format!("{}.yaml", e.config_map));
        anyhow::anyhow!("{}: key {:?}: {}", file.display(), e.key, e.message)
    })
}

fn stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    Configs::NAMES
        .iter()
        .map(|f| {
            let p = dir.join(format!("{f}.yaml"));
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, m)
        })
        .collect()
}

/// Re-reads the files when their modification times change, publishing good settings.
pub async fn watch_files(dir: PathBuf, domain: String, tx: watch::Sender<Arc<Configs>>) {
    let mut last = stamp(&dir);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stamp(&dir);
        if now == last {
            continue;
        }
        last = now;
        match load(&dir, &domain) {
            Ok(cfg) => {
                tracing::info!("Config files changed; new settings applied.");
                tx.send_replace(Arc::new(cfg));
            }
            Err(error) => {
                tracing::error!(%error, "Config file rejected; keeping the previous settings.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_override_defaults_and_bad_values_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load(dir.path(), "localhost").unwrap();
        assert_eq!(cfg.defaults.revision_timeout_seconds, 300);
        assert_eq!(cfg.domain.domain_for(&Default::default()), "localhost");

        let write =
            |text: &str| std::fs::write(dir.path().join("config-defaults.yaml"), text).unwrap();
        write(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-defaults\ndata:\n  revision-timeout-seconds: \"120\"\n",
        );
        assert_eq!(
            load(dir.path(), "localhost")
                .unwrap()
                .defaults
                .revision_timeout_seconds,
            120
        );

        write(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-defaults\ndata:\n  revision-timeout-seconds: soon\n",
        );
        let err = load(dir.path(), "localhost").unwrap_err().to_string();
        assert!(err.contains("config-defaults.yaml"), "{err}");
        assert!(err.contains("revision-timeout-seconds"), "{err}");

        write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-network\n");
        assert!(
            load(dir.path(), "localhost")
                .unwrap_err()
                .to_string()
                .contains("want \"config-defaults\"")
        );
    }
}
