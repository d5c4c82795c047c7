//! Sluice's controllers. Each reconciler is a pure function from observed objects to desired
//! objects and status ([`service`], [`configuration`], [`revision`], [`route`], [`routing`]),
//! unit-tested without I/O; the [`driver`] reads and writes through the platform seams, and
//! [`autoscaling`] feeds every revision's autoscaler and decides its scale.

pub mod autoscaling;
pub mod configuration;
pub mod driver;
pub mod gc;
pub mod kube_routing;
pub mod meta;
pub mod revision;
pub mod rollout;
pub mod route;
pub mod routing;
pub mod service;

pub use autoscaling::Autoscaler;
pub use driver::{Controller, Settings};
