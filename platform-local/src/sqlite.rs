//! The local object store: one SQLite file (WAL) written only by the daemon.
//!
//! Each object is one row of JSON keyed by kind, namespace and name. A global counter gives
//! resourceVersions; every committed change bumps a watch channel that wakes the reconcilers.

use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sluice_api::{Object, ObjectKind};
use tokio::sync::watch;

use sluice_platform::store::{Store, StoreError};

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    changes: watch::Sender<u64>,
}

fn backend(e: impl Into<sluice_platform::store::BoxError>) -> StoreError {
    StoreError::Backend(e.into())
}

/// A random RFC 4122 version-4 UID.
pub fn new_uid() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS objects (
                 kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 body TEXT NOT NULL, PRIMARY KEY (kind, namespace, name));
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('resource_version', 0);",
        )
        .map_err(backend)?;
        let rv: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'resource_version'",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let (changes, _) = watch::channel(u64::try_from(rv).unwrap_or(0));
        Ok(Self {
            conn: Mutex::new(conn),
            changes,
        })
    }

    fn with_tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().expect("store lock poisoned");
        let tx = conn.transaction().map_err(backend)?;
        let out = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    fn read(
        tx: &Connection,
        kind: ObjectKind,
        ns: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        let body: Option<String> = tx
            .query_row(
                "SELECT body FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind.as_str(), ns, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| decode(kind, &b)).transpose()
    }

    fn read_existing(tx: &Connection, obj: &Object) -> Result<Object, StoreError> {
        Self::read(tx, obj.kind(), obj.namespace(), obj.name())?.ok_or_else(|| {
            StoreError::NotFound {
                kind: obj.kind(),
                namespace: obj.namespace().to_owned(),
                name: obj.name().to_owned(),
            }
        })
    }

    /// Stores `next` under a new resourceVersion unless it equals `stored`; returns the object
    /// now stored and the new version, if one was written.
    fn write_if_changed(
        tx: &Connection,
        stored: Object,
        mut next: Object,
    ) -> Result<(Object, Option<u64>), StoreError> {
        if next == stored {
            return Ok((stored, None));
        }
        let rv = Self::bump(tx)?;
        next.meta_mut().resource_version = Some(rv.to_string());
        Self::write(tx, &next)?;
        Ok((next, Some(rv)))
    }

    fn bump(tx: &Connection) -> Result<u64, StoreError> {
        tx.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'resource_version' RETURNING value",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|v| u64::try_from(v).unwrap_or(0))
        .map_err(backend)
    }

    fn write(tx: &Connection, obj: &Object) -> Result<(), StoreError> {
        let body = serde_json::to_string(&obj.to_json()).map_err(backend)?;
        tx.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, body) VALUES (?1, ?2, ?3, ?4)",
            params![obj.kind().as_str(), obj.namespace(), obj.name(), body],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn notify(&self, rv: u64) {
        self.changes.send_replace(rv);
    }
}

fn decode(kind: ObjectKind, body: &str) -> Result<Object, StoreError> {
    let value: Value = serde_json::from_str(body).map_err(backend)?;
    Object::from_json(kind, value).map_err(backend)
}

fn check_version(stored: &Object, incoming: &Object) -> Result<(), StoreError> {
    let have = incoming.meta().resource_version.as_deref();
    let now = stored.meta().resource_version.as_deref().unwrap_or("");
    match have {
        Some(have) if have != now => Err(StoreError::Conflict {
            kind: stored.kind(),
            namespace: stored.namespace().to_owned(),
            name: stored.name().to_owned(),
            have: have.to_owned(),
            stored: now.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn part(obj: &Object, field: &str) -> Value {
    obj.to_json().get(field).cloned().unwrap_or(Value::Null)
}

/// `obj` with `field` (spec or status) taken from `from`.
fn with_part(obj: &Object, from: &Object, field: &str) -> Result<Object, StoreError> {
    let mut json = obj.to_json();
    let value = part(from, field);
    let map = json.as_object_mut().expect("objects are JSON maps");
    if value.is_null() {
        map.remove(field);
    } else {
        map.insert(field.to_owned(), value);
    }
    Object::from_json(obj.kind(), json).map_err(backend)
}

impl Store for SqliteStore {
    async fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        let conn = self.conn.lock().expect("store lock poisoned");
        Self::read(&conn, kind, namespace, name)
    }

    async fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<Object>, StoreError> {
        let conn = self.conn.lock().expect("store lock poisoned");
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM objects WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2)
                 ORDER BY namespace, name",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![kind.as_str(), namespace], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode(kind, &b.map_err(backend)?)).collect()
    }

    async fn create(&self, mut obj: Object) -> Result<Object, StoreError> {
        let out = self.with_tx(|tx| {
            if Self::read(tx, obj.kind(), obj.namespace(), obj.name())?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: obj.kind(),
                    namespace: obj.namespace().to_owned(),
                    name: obj.name().to_owned(),
                });
            }
            let rv = Self::bump(tx)?;
            let ns = obj.namespace().to_owned();
            let meta = obj.meta_mut();
            meta.namespace = Some(ns);
            meta.uid = Some(new_uid());
            meta.resource_version = Some(rv.to_string());
            meta.generation = Some(1);
            meta.creation_timestamp = Some(Time(jiff::Timestamp::now()));
            Self::write(tx, &obj)?;
            Ok((obj, rv))
        })?;
        self.notify(out.1);
        Ok(out.0)
    }

    async fn update(&self, obj: Object) -> Result<Object, StoreError> {
        let out = self.with_tx(|tx| {
            let stored = Self::read_existing(tx, &obj)?;
            check_version(&stored, &obj)?;
            let mut next = with_part(&obj, &stored, "status")?;
            let spec_changed = part(&stored, "spec") != part(&next, "spec");
            {
                let old = stored.meta();
                let meta = next.meta_mut();
                meta.uid.clone_from(&old.uid);
                meta.creation_timestamp.clone_from(&old.creation_timestamp);
                meta.resource_version.clone_from(&old.resource_version);
                let generation = old.generation.unwrap_or(1);
                meta.generation = Some(if spec_changed {
                    generation + 1
                } else {
                    generation
                });
            }
            Self::write_if_changed(tx, stored, next)
        })?;
        if let Some(rv) = out.1 {
            self.notify(rv);
        }
        Ok(out.0)
    }

    async fn update_status(&self, obj: Object) -> Result<Object, StoreError> {
        let out = self.with_tx(|tx| {
            let stored = Self::read_existing(tx, &obj)?;
            check_version(&stored, &obj)?;
            let next = with_part(&stored, &obj, "status")?;
            Self::write_if_changed(tx, stored, next)
        })?;
        if let Some(rv) = out.1 {
            self.notify(rv);
        }
        Ok(out.0)
    }

    async fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let out = self.with_tx(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    params![kind.as_str(), namespace, name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Ok(None);
            }
            Self::bump(tx).map(Some)
        })?;
        if let Some(rv) = out {
            self.notify(rv);
        }
        Ok(out.is_some())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::manifest::parse_documents;

    fn hello(target: &str) -> Object {
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      containers:\n        - command: [hello]\n          env:\n            - name: TARGET\n              value: {target}\n"
        );
        parse_documents(&yaml).unwrap().remove(0)
    }

    #[tokio::test]
    async fn create_assigns_identity_and_generation() {
        let store = SqliteStore::in_memory().unwrap();
        let created = store.create(hello("a")).await.unwrap();
        let meta = created.meta();
        assert_eq!(meta.generation, Some(1));
        assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
        assert!(matches!(
            store.create(hello("a")).await,
            Err(StoreError::AlreadyExists { .. })
        ));
    }

    #[tokio::test]
    async fn spec_change_bumps_generation_and_stale_version_conflicts() {
        let store = SqliteStore::in_memory().unwrap();
        let created = store.create(hello("a")).await.unwrap();
        let mut next = hello("b");
        next.meta_mut()
            .resource_version
            .clone_from(&created.meta().resource_version);
        let updated = store.update(next).await.unwrap();
        assert_eq!(updated.meta().generation, Some(2));
        let mut stale = hello("c");
        stale
            .meta_mut()
            .resource_version
            .clone_from(&created.meta().resource_version);
        assert!(matches!(
            store.update(stale).await,
            Err(StoreError::Conflict { .. })
        ));
        let same = store.update(hello("b")).await.unwrap();
        assert_eq!(
            same.meta().resource_version,
            updated.meta().resource_version
        );
    }

    #[tokio::test]
    async fn objects_survive_reopen_and_changes_are_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut rx = store.changes();
            store.create(hello("a")).await.unwrap();
            assert!(rx.has_changed().unwrap());
            rx.mark_unchanged();
            assert!(
                store
                    .delete(ObjectKind::Service, "default", "nope")
                    .await
                    .is_ok()
            );
            assert!(!rx.has_changed().unwrap());
        }
        let store = SqliteStore::open(&path).unwrap();
        let all = store.list(ObjectKind::Service, None).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name(), "hello");
    }
}
