//! Sluice's controllers. Each reconciler is a pure function from observed objects (and `now`)
//! to desired objects and status ([`service`], [`configuration`], [`revision`], [`route`],
//! [`routing`], [`gc`], [`rollout`]); the [`plan`] of a pass decides what is orphaned,
//! routed, reachable and garbage. All of that is tested without I/O. The [`driver`] reads and
//! writes through the platform seams and reads time from a `Clock`, so it is tested
//! in-process on a driven clock; [`autoscaling`] feeds every revision's autoscaler.
//!
//! Owns what objects should be and the loop that makes them so. Must not depend on a
//! platform's implementation (SQLite, kube-rs, processes), only on the seams in
//! `sluice-platform`; its tests use the implementations as dev-dependencies.

pub mod autoscaling;
pub mod configuration;
pub mod driver;
pub mod gc;
pub mod meta;
pub mod plan;
pub mod revision;
pub mod rollout;
pub mod route;
pub mod routing;
pub mod service;

pub use autoscaling::Autoscaler;
pub use driver::Controller;
