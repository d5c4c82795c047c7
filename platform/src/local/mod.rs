//! The local platform's implementations: its home directory, SQLite objects, a process
//! supervisor, ports, the admin socket's client.

pub mod home;
pub mod ports;
pub mod process;
pub mod sqlite;
pub mod supervisor;
pub mod uds;

pub use home::Home;
pub use sqlite::SqliteStore;
pub use supervisor::{Supervisor, SupervisorConfig};
