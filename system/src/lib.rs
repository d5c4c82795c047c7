//! Sluice's components on a Kubernetes cluster, as the Deployments in `config/` run them:
//! `sluice system controller` (reconcilers and the KPA autoscaler behind a Lease, with a
//! stats endpoint the activators report to, and the admission webhooks every write to the
//! API server passes) and `sluice system activator` (the front door, routing from the
//! cluster's Routes and EndpointSlices).
//!
//! Owns the components' wiring and flags. Must not depend on the CLI or on the local platform
//! (SQLite, processes).

pub mod activator;
pub mod controller;
pub mod routing;
pub mod webhook;
