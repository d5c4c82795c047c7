//! Admission, then the write: nothing reaches a [`Store`] unless
//! [`admit`](sluice_api::admission::admit) passes it.

use sluice_api::Object;
pub use sluice_api::admission::Platform;
use sluice_api::admission::admit_with;
use sluice_api::config::DefaultsConfig;
use sluice_api::validation::PodSpecFeatures;
use sluice_api::validation::ValidationError;

use crate::{Store, StoreError};

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A create of an object that exists.
    #[error("{0}")]
    Exists(String),
    /// Admission refused it.
    #[error("{0}")]
    Invalid(ValidationError),
    /// The store refused it.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Who writes, where, under which operator settings.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// config-defaults.
    pub defaults: &'a DefaultsConfig,
    /// The PodSpec fields config-features allows.
    pub features: &'a PodSpecFeatures,
    /// The user the creator and last-modifier annotations name.
    pub user: &'a str,
    /// Where the object runs.
    pub platform: Platform,
}

/// Admits `obj` and stores it: created, replaced (`configured`, or `unchanged` when nothing
/// changed) or, with `dry_run`, only admitted (`validated`). Returns the action and the
/// object as stored.
pub async fn write<S: Store>(
    store: &S,
    obj: Object,
    create_only: bool,
    dry_run: bool,
    writer: Writer<'_>,
) -> Result<(&'static str, Object), WriteError> {
    let kind = obj.kind();
    let existing = store.get(kind, obj.namespace(), obj.name()).await?;
    if create_only && existing.is_some() {
        return Err(WriteError::Exists(format!(
            "cannot create {} '{}' in namespace '{}' because it already exists; use update, or --force to replace it",
            kind.as_str().to_lowercase(),
            obj.name(),
            obj.namespace()
        )));
    }
    let mut admitted = admit_with(
        obj,
        existing.as_ref(),
        writer.defaults,
        writer.features,
        writer.user,
        writer.platform,
    )
    .map_err(WriteError::Invalid)?;
    if dry_run {
        return Ok(("validated", admitted));
    }
    Ok(match existing {
        None => ("created", store.create(admitted).await?),
        Some(old) => {
            admitted.meta_mut().resource_version = None;
            let stored = store.update(admitted).await?;
            let same = stored.meta().resource_version == old.meta().resource_version;
            (if same { "unchanged" } else { "configured" }, stored)
        }
    })
}
