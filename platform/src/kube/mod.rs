//! The Kubernetes side of the seams, over kube-rs: objects are the `serving.knative.dev`
//! custom resources on the API server.

pub mod store;

pub use store::KubeStore;
