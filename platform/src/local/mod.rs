//! The local platform's implementations: SQLite objects, a process supervisor, ports.

pub mod ports;
pub mod process;
pub mod sqlite;
pub mod supervisor;
pub mod uds;

pub use sqlite::SqliteStore;
pub use supervisor::{Supervisor, SupervisorConfig};
