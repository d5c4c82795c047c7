//! The seams between Sluice's control plane and the machine it runs on, each with its local
//! implementation: the object [`store`], the [`workloads`] that run revisions, and the
//! [`routing`] snapshot the activator serves from, and the [`clock`] the control loop reads.

pub mod admission;
pub mod clock;
pub mod kube;
pub mod local;
pub mod routing;
pub mod store;
pub mod workloads;

pub use clock::{Clock, ManualClock, SystemClock};
pub use routing::{ActivatorStat, RevisionKey, RoutingSnapshot};
pub use store::{Store, StoreError};
pub use workloads::{WorkloadSpec, WorkloadStatus, Workloads};
