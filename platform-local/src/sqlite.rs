//! The local object store: one SQLite file written only by the daemon.
//!
//! Each object is one row of JSON keyed by kind, namespace and name. A global counter gives
//! resourceVersions; every committed change bumps a watch channel that wakes the reconcilers.
//!
//! Durability and faults:
//! - `journal_mode=WAL` with `synchronous=FULL` for create, update and delete: the WAL is
//!   fsynced before the write is acknowledged, so what a user applied survives a crash of the
//!   daemon or of the machine. Status writes (recomputed by the controllers after a restart)
//!   commit with `synchronous=NORMAL`: they survive a crash of the daemon, not a power loss.
//! - `locking_mode=EXCLUSIVE`: the daemon holds the file's lock for its life (no other process
//!   can lock it from under the daemon), and SQLite keeps the WAL index in the daemon's heap
//!   instead of a memory-mapped `-shm` file, whose pages kill a process with SIGBUS when the
//!   disk under them fills or fails.
//! - A read-only, full or failing disk, or a database locked at start, gives
//!   [`StoreError::Unavailable`] naming the cause and the fix; nothing is changed and the
//!   connection stays usable, so the same write succeeds once the cause is gone.
//! - A WAL (or database) file removed from under the daemon is noticed after every write: its
//!   contents are checkpointed into the database (or the database is written out again) and the
//!   files reopened, so no acknowledged write lives only in an unlinked file.

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde_json::Value;
use sluice_api::{Object, ObjectKind};
use tokio::sync::watch;

use sluice_platform::store::{Changes, ObjectRef, Store, StoreError};

/// How long opening waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// How many changes the journal remembers: a reader further behind lists everything again.
const JOURNAL_LEN: usize = 65_536;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    db: Mutex<Db>,
    changes: watch::Sender<u64>,
}

/// The connection and what is known of the files under it.
struct Db {
    /// `None` only after a reopen failed; the next operation tries again.
    conn: Option<Connection>,
    /// The database's files; `None` in memory.
    files: Option<Files>,
    /// Whether the connection is at `synchronous=FULL`.
    full_sync: bool,
    /// The latest changes, oldest first, for readers that follow changes instead of listing.
    journal: Journal,
}

/// Recent changes by resourceVersion; everything after `floor` is in `entries`.
#[derive(Default)]
struct Journal {
    entries: VecDeque<(u64, ObjectRef)>,
    floor: u64,
}

impl Journal {
    fn push(&mut self, rv: u64, key: ObjectRef) {
        if self.entries.len() == JOURNAL_LEN
            && let Some((old, _)) = self.entries.pop_front()
        {
            self.floor = old;
        }
        self.entries.push_back((rv, key));
    }

    fn since(&self, since: u64, version: u64) -> Option<Changes> {
        if since < self.floor {
            return None;
        }
        let mut seen = HashSet::new();
        let objects = self
            .entries
            .iter()
            .rev()
            .take_while(|(rv, _)| *rv > since)
            .filter(|(_, key)| seen.insert(key))
            .map(|(_, key)| key.clone())
            .collect();
        Some(Changes { version, objects })
    }
}

fn key_of(obj: &Object) -> ObjectRef {
    ObjectRef {
        kind: obj.kind(),
        namespace: obj.namespace().to_owned(),
        name: obj.name().to_owned(),
    }
}

/// The identity (device, inode) of the database and WAL files the connection has open, to
/// notice one removed or replaced under it.
struct Files {
    path: PathBuf,
    db: Option<(u64, u64)>,
    wal: Option<(u64, u64)>,
}

fn backend(e: impl Into<sluice_platform::store::BoxError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// A SQLite failure that comes from the storage rather than from Sluice: the error the user
/// sees names the cause and the fix.
fn unavailable(path: Option<&Path>, e: &rusqlite::Error) -> Option<StoreError> {
    let rusqlite::Error::SqliteFailure(failure, _) = e else {
        return None;
    };
    let code = failure.code;
    let storage = matches!(
        code,
        ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::PermissionDenied
    );
    if !storage {
        return None;
    }
    let db = path.map_or_else(|| "the database".to_owned(), |p| p.display().to_string());
    let dir = path.and_then(Path::parent);
    let fs = dir.and_then(|d| nix::sys::statvfs::statvfs(d).ok());
    let read_only = fs
        .as_ref()
        .is_some_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let free = fs
        .as_ref()
        .map(|s| s.blocks_available() * s.fragment_size());
    // What the file system says to a write of its own: the errno SQLite saw is not kept.
    let probe = dir.map(|d| {
        let file = d.join(".sluice-write-probe");
        let made = std::fs::write(&file, b"probe");
        let _ = std::fs::remove_file(&file);
        made.err().and_then(|e| e.raw_os_error())
    });
    let read_only = read_only || probe == Some(Some(nix::libc::EROFS));
    let full = probe == Some(Some(nix::libc::ENOSPC));
    let where_ = dir.map_or_else(String::new, |d| format!(" holding {}", d.display()));
    let message = if read_only || code == ErrorCode::ReadOnly {
        format!(
            "cannot save: the file system{where_} is read-only ({e}); nothing was changed. Make it writable (check `dmesg` for disk errors, repair it) and restart Sluice; running services keep serving meanwhile"
        )
    } else if full || code == ErrorCode::DiskFull || free.is_some_and(|f| f < 1 << 20) {
        format!(
            "cannot save: the disk{where_} is full ({} bytes free; {e}); nothing was changed. Free some space and retry: Sluice saves again as soon as there is room",
            free.unwrap_or(0)
        )
    } else if matches!(code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) {
        format!(
            "cannot use {db}: it is locked by another process ({e}). Close whatever has it open (an sqlite3 shell?); only the Sluice daemon may open it"
        )
    } else {
        format!("cannot save to {db}: {e}; nothing was changed. Check the disk{where_} and retry")
    };
    Some(StoreError::Unavailable(message))
}

/// `err` as the caller should see it: a storage failure named as such.
fn classify(path: Option<&Path>, err: StoreError) -> StoreError {
    if let StoreError::Backend(cause) = &err
        && let Some(e) = cause.downcast_ref::<rusqlite::Error>()
        && let Some(named) = unavailable(path, e)
    {
        return named;
    }
    err
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

/// Opens the database file with Sluice's settings and schema.
fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let named = |e: rusqlite::Error| classify(Some(path), backend(e));
    let conn = Connection::open(path).map_err(named)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(named)?;
    // Exclusive before the first WAL access: no `-shm` file is ever mapped.
    conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;")
        .map_err(named)?;
    init_schema(&conn).map_err(named)?;
    Ok(conn)
}

fn init_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS objects (
             kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
             body TEXT NOT NULL, PRIMARY KEY (kind, namespace, name));
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT OR IGNORE INTO meta (key, value) VALUES ('resource_version', 0);",
    )
}

impl Db {
    fn conn(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none()
            && let Some(files) = &self.files
        {
            self.conn = Some(open_file(&files.path)?);
            self.full_sync = true;
            let path = files.path.clone();
            self.files = Some(Files::of(path));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the database is not open".to_owned()))
    }

    fn path(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.path.as_path())
    }

    /// After a write: when the WAL or the database file was removed or replaced under the
    /// connection, saves everything into a database file at the path and reopens.
    fn check_files(&mut self) {
        let Some(files) = &mut self.files else { return };
        let db_now = identity(&files.path);
        let wal_now = identity(&wal_path(&files.path));
        if files.wal.is_none() {
            files.wal = wal_now;
        }
        let db_gone = db_now.is_none();
        let db_replaced = db_now.is_some() && db_now != files.db;
        let wal_gone = files.wal.is_some() && wal_now != files.wal;
        if !(db_gone || db_replaced || wal_gone) {
            return;
        }
        let path = files.path.clone();
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if db_replaced {
            tracing::error!(path = %path.display(), "The database file was replaced under the daemon; reopening what is at its path now.");
        } else if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::error!(%error, "Cannot checkpoint the WAL into the database.");
            return;
        }
        if db_gone {
            tracing::error!(path = %path.display(), "The database file was removed under the daemon; writing it out again.");
            if let Err(error) = conn.execute("VACUUM INTO ?1", params![path.to_string_lossy()]) {
                tracing::error!(%error, "Cannot write the database out again.");
                return;
            }
        } else if wal_gone {
            tracing::warn!(path = %path.display(), "The WAL was removed under the daemon; its writes were saved into the database and a new WAL started.");
        }
        self.conn = None;
        self.files = Some(Files::of(path));
        if let Err(error) = self.conn() {
            tracing::error!(%error, "Cannot reopen the database.");
        }
    }
}

impl Files {
    fn of(path: PathBuf) -> Self {
        Self {
            db: identity(&path),
            wal: identity(&wal_path(&path)),
            path,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_file(path)?;
        Self::init(conn, Some(Files::of(path.to_owned())))
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        init_schema(&conn).map_err(backend)?;
        Self::init(conn, None)
    }

    /// [`Store::list`] as the stored JSON of each object (what [`Object::to_json`] gave when
    /// it was written), for an answer that only passes it on.
    pub async fn list_json(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.with_conn(|conn| Self::bodies(conn, kind, namespace))
    }

    fn init(conn: Connection, files: Option<Files>) -> Result<Self, StoreError> {
        let rv: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'resource_version'",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let (changes, _) = watch::channel(u64::try_from(rv).unwrap_or(0));
        Ok(Self {
            db: Mutex::new(Db {
                conn: Some(conn),
                files,
                full_sync: true,
                journal: Journal {
                    entries: VecDeque::new(),
                    floor: u64::try_from(rv).unwrap_or(0),
                },
            }),
            changes,
        })
    }

    /// Runs `f` on the connection, naming storage failures.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().expect("store lock poisoned");
        let out = db.conn().and_then(|c| f(c));
        out.map_err(|e| classify(db.path(), e))
    }

    /// Runs `f` in a write transaction; `durable` commits fsync the WAL before returning.
    /// When `f` returns the new resourceVersion of `key`, the change is journalled and
    /// signalled before the lock is let go, so journal and signal are in version order.
    fn with_tx<T>(
        &self,
        durable: bool,
        key: ObjectRef,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Option<u64>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().expect("store lock poisoned");
        let was_full = db.full_sync;
        let out = db.conn().and_then(|conn| {
            if was_full != durable {
                let level = if durable { "FULL" } else { "NORMAL" };
                conn.pragma_update(None, "synchronous", level)
                    .map_err(backend)?;
            }
            let tx = conn.transaction().map_err(backend)?;
            let out = f(&tx)?;
            tx.commit().map_err(backend)?;
            Ok(out)
        });
        if let Ok((_, written)) = &out {
            db.full_sync = durable;
            db.check_files();
            if let Some(rv) = *written {
                db.journal.push(rv, key);
                self.changes.send_replace(rv);
            }
        }
        out.map(|(t, _)| t).map_err(|e| classify(db.path(), e))
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

    /// The stored JSON of every object of `kind` (in `namespace`), by namespace and name.
    fn bodies(
        conn: &Connection,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM objects WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2)
                 ORDER BY namespace, name",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![kind.as_str(), namespace], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| b.map_err(backend)).collect()
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
        self.with_conn(|conn| Self::read(conn, kind, namespace, name))
    }

    async fn list(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<Object>, StoreError> {
        self.with_conn(|conn| {
            Self::bodies(conn, kind, namespace)?
                .iter()
                .map(|b| decode(kind, b))
                .collect()
        })
    }

    async fn create(&self, mut obj: Object) -> Result<Object, StoreError> {
        self.with_tx(true, key_of(&obj), |tx| {
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
            Ok((obj, Some(rv)))
        })
    }

    async fn update(&self, obj: Object) -> Result<Object, StoreError> {
        self.with_tx(true, key_of(&obj), |tx| {
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
        })
    }

    async fn update_status(&self, obj: Object) -> Result<Object, StoreError> {
        self.with_tx(false, key_of(&obj), |tx| {
            let stored = Self::read_existing(tx, &obj)?;
            check_version(&stored, &obj)?;
            let next = with_part(&stored, &obj, "status")?;
            Self::write_if_changed(tx, stored, next)
        })
    }

    async fn delete(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let key = ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.with_tx(true, key, |tx| {
            let n = tx
                .execute(
                    "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    params![kind.as_str(), namespace, name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Ok((false, None));
            }
            Self::bump(tx).map(|rv| (true, Some(rv)))
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed_since(&self, since: u64) -> Option<Changes> {
        let db = self.db.lock().expect("store lock poisoned");
        db.journal.since(since, *self.changes.borrow())
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
    async fn list_json_is_what_list_decodes() {
        let store = SqliteStore::in_memory().unwrap();
        let mut other = hello("b");
        other.meta_mut().name = Some("other".into());
        store.create(hello("a")).await.unwrap();
        store.create(other).await.unwrap();
        let objects = store
            .list(ObjectKind::Service, Some("default"))
            .await
            .unwrap();
        let bodies = store
            .list_json(ObjectKind::Service, Some("default"))
            .await
            .unwrap();
        let list = format!("{{\"items\":[{}]}}", bodies.join(","));
        let decoded = Object::list_from_slice(ObjectKind::Service, list.as_bytes()).unwrap();
        assert_eq!(decoded.len(), 2);
        let json = |objs: &[Object]| objs.iter().map(Object::to_json).collect::<Vec<_>>();
        assert_eq!(json(&decoded), json(&objects));
        assert!(
            store
                .list_json(ObjectKind::Service, Some("elsewhere"))
                .await
                .unwrap()
                .is_empty()
        );
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

    #[tokio::test]
    async fn the_journal_names_each_change_after_a_version_once() {
        let store = SqliteStore::in_memory().unwrap();
        let start = *store.changes().borrow();
        assert!(store.changed_since(start).unwrap().objects.is_empty());
        store.create(hello("a")).await.unwrap();
        let after_create = *store.changes().borrow();
        store.update(hello("b")).await.unwrap();
        // An update that changes nothing is not a change.
        store.update(hello("b")).await.unwrap();
        let changes = store.changed_since(start).unwrap();
        assert_eq!(changes.version, *store.changes().borrow());
        let named: Vec<&str> = changes.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(named, ["hello"], "two writes of one object, named once");
        assert_eq!(
            store.changed_since(changes.version).unwrap().objects.len(),
            0
        );
        assert_eq!(store.changed_since(after_create).unwrap().objects.len(), 1);
        store
            .delete(ObjectKind::Service, "default", "hello")
            .await
            .unwrap();
        let deleted = store.changed_since(changes.version).unwrap();
        assert_eq!(deleted.objects[0].kind, ObjectKind::Service);

        // A reader older than what the journal remembers must list everything again.
        let trimmed = SqliteStore::in_memory().unwrap();
        trimmed.create(hello("a")).await.unwrap();
        trimmed.db.lock().unwrap().journal.floor = 1;
        assert!(trimmed.changed_since(0).is_none());
    }
}
