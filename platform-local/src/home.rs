//! The local platform's home directory and the files in it.

use std::path::{Path, PathBuf};

/// Paths under a Sluice home (`--home`, `$SLUICE_HOME`, or `~/.sluice`).
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `~/.sluice` when neither `--home` nor `$SLUICE_HOME` is given.
    pub fn default_root() -> PathBuf {
        std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".sluice"),
            |h| PathBuf::from(h).join(".sluice"),
        )
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The admin API socket (mode 0600).
    pub fn socket(&self) -> PathBuf {
        self.root.join("sluice.sock")
    }

    /// The SQLite object store.
    pub fn database(&self) -> PathBuf {
        self.root.join("sluice.db")
    }

    /// The lock held by the running daemon; holds its pid.
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// Logs of the activator and every replica.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Operator config maps (`config-defaults.yaml`, …).
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
}
