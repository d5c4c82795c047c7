//! The seams between Sluice's control plane and the machine it runs on: the object
//! [`store`], the [`workloads`] that run revisions, the [`routing`] snapshot the activator
//! serves from, the [`clock`] the control loop reads, and [`admission`] before any write.
//!
//! Owns the traits and the types that cross them. Must not depend on an implementation:
//! SQLite and processes are `sluice-platform-local`, kube-rs is `sluice-platform-kube`, so
//! the activator and the controllers build neither.

pub mod admission;
pub mod changes;
pub mod clock;
pub mod routing;
pub mod store;
pub mod workloads;

pub use changes::RevisionChanges;
pub use clock::{Clock, ManualClock, SystemClock};
pub use routing::{ActivatorStat, RevisionKey, RoutingSnapshot};
pub use store::{Store, StoreError};
pub use workloads::{WorkloadSpec, WorkloadStatus, Workloads};
