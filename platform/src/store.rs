//! The object store seam: get, list, create, update, update-status and delete of Sluice's
//! objects, with resourceVersion conflicts, and a change signal that drives reconciles.

use std::future::Future;

use sluice_api::{Object, ObjectKind};
use tokio::sync::watch;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// Kind of the missing object.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Create of an object that exists.
    #[error("{kind} {namespace}/{name} already exists")]
    AlreadyExists {
        /// Kind of the object.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The caller's resourceVersion is stale: re-read and try again.
    #[error(
        "{kind} {namespace}/{name} was changed since it was read (resourceVersion {have}, stored {stored}); read it again and retry"
    )]
    Conflict {
        /// Kind of the object.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The version the caller sent.
        have: String,
        /// The version stored.
        stored: String,
    },
    /// The storage under the store cannot take writes (or reads) now: a read-only or full
    /// disk, a database locked by another process. The message names the cause and the fix;
    /// nothing was changed, and the same request succeeds once the cause is gone.
    #[error("{0}")]
    Unavailable(String),
    /// The backing store failed; the cause is kept for whoever logs or matches on it.
    #[error("store: {0}")]
    Backend(#[source] BoxError),
}

/// Which object changed: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The objects changed (created, updated or deleted) after some resourceVersion.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// The newest resourceVersion these changes cover: the next call starts from it.
    pub version: u64,
    /// Each changed object once, in no particular order.
    pub objects: Vec<ObjectRef>,
}

/// Any error, as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Typed access to stored objects. Implementations assign `uid`, `resourceVersion`,
/// `generation` (bumped when the spec changes) and `creationTimestamp`.
pub trait Store: Send + Sync + 'static {
    /// One object, if it exists.
    fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Object>, StoreError>> + Send;

    /// All objects of a kind, in one namespace or all, ordered by namespace and name.
    fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Object>, StoreError>> + Send;

    /// Stores a new object; fails if it exists.
    fn create(&self, obj: Object) -> impl Future<Output = Result<Object, StoreError>> + Send;

    /// Replaces metadata and spec (status is kept); checks resourceVersion when given.
    fn update(&self, obj: Object) -> impl Future<Output = Result<Object, StoreError>> + Send;

    /// Replaces status only; checks resourceVersion when given.
    fn update_status(&self, obj: Object)
    -> impl Future<Output = Result<Object, StoreError>> + Send;

    /// Deletes an object; returns whether it existed.
    fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A signal that changes whenever any object changes (carries the newest resourceVersion).
    fn changes(&self) -> watch::Receiver<u64>;

    /// Which objects changed after resourceVersion `since`, if the store still knows every
    /// one of them; `None` tells the caller to list everything again (the default, for stores
    /// that keep no journal). Every change up to the version [`Store::changes`] carries is in
    /// the journal by the time that version is signalled.
    fn changed_since(&self, since: u64) -> Option<Changes> {
        let _ = since;
        None
    }
}
