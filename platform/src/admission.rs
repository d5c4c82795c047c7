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

/// How often a write without a base resourceVersion is admitted again when another write
/// lands between its read and its write.
const REPLACE_ATTEMPTS: usize = 8;

/// Admits `obj` and stores it: created, replaced (`configured`, or `unchanged` when nothing
/// changed) or, with `dry_run`, only admitted (`validated`). Returns the action and the
/// object as stored.
///
/// A write that carries the resourceVersion it was based on (a read-modify-write, as
/// `service update` does) is stored only if nothing changed since: otherwise it fails with
/// [`StoreError::Conflict`] and the caller reads again and re-applies its change, so no
/// acknowledged update is lost. A write without one (`apply` of a manifest) replaces what is
/// stored; it is admitted against the object it replaces and written only if that object is
/// still the stored one, admitted again otherwise.
pub async fn write<S: Store>(
    store: &S,
    obj: Object,
    create_only: bool,
    dry_run: bool,
    writer: Writer<'_>,
) -> Result<(&'static str, Object), WriteError> {
    let based_on = obj.meta().resource_version.is_some();
    let mut attempt = 1;
    loop {
        match write_once(store, obj.clone(), create_only, dry_run, writer).await {
            Err(WriteError::Store(StoreError::Conflict { .. }))
                if !based_on && attempt < REPLACE_ATTEMPTS =>
            {
                attempt += 1;
            }
            done => return done,
        }
    }
}

async fn write_once<S: Store>(
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
        None => {
            admitted.meta_mut().resource_version = None;
            ("created", store.create(admitted).await?)
        }
        Some(old) => {
            let meta = admitted.meta_mut();
            if meta.resource_version.is_none() {
                // Replace exactly the object admission saw.
                meta.resource_version
                    .clone_from(&old.meta().resource_version);
            }
            let stored = store.update(admitted).await?;
            let same = stored.meta().resource_version == old.meta().resource_version;
            (if same { "unchanged" } else { "configured" }, stored)
        }
    })
}
