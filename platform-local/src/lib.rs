//! The local platform's side of the seams: its home directory, objects in SQLite, replicas as
//! supervised local processes (each a user process behind its own queue-proxy process), and
//! free loopback ports for them.
//!
//! Owns everything that touches the local machine for the control plane. Must not depend on
//! kube-rs or on the controllers.

pub mod home;
pub mod ports;
pub mod process;
pub mod sockets;
pub mod sqlite;
pub mod supervisor;

pub use home::Home;
pub use sqlite::SqliteStore;
pub use supervisor::{Supervisor, SupervisorConfig};
