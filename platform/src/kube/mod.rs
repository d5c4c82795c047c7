//! The Kubernetes side of the seams, over kube-rs: objects are the `serving.knative.dev`
//! custom resources on the API server, and revisions run as Deployments.

pub mod endpoints;
pub mod lease;
pub mod store;
pub mod workloads;

pub use lease::{Elector, LeaseTimings};
pub use store::KubeStore;
pub use workloads::{KubeWorkloads, KubeWorkloadsConfig};
