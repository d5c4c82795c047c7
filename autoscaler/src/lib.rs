//! Scale decisions for revisions, Knative's KPA: the scale bounds a revision starts with and is
//! clamped to, the per-replica target, the bucketed stable and panic windows, and the decider.
//! Everything here is pure and takes time as a parameter.

pub mod bounds;
pub mod buckets;
pub mod decider;
pub mod target;

pub use bounds::ScaleBounds;
pub use buckets::WindowBuckets;
pub use decider::{Decider, DeciderSpec, Decision};
pub use target::{Metric, Target};
