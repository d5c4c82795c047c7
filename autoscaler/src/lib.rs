//! Scale decisions for revisions, Knative's KPA: the scale bounds a revision starts with and is
//! clamped to, the per-replica target, the bucketed stable and panic windows, the decider, and the per-revision scale-to-zero
//! state machine.
//! Everything here is pure and takes time as a parameter.
//!
//! Owns the scaling arithmetic. Must not depend on the platform, the controllers or a clock.

pub mod bounds;
pub mod buckets;
pub mod decider;
pub mod scaler;
pub mod target;

pub use bounds::ScaleBounds;
pub use buckets::WindowBuckets;
pub use decider::{Decider, DeciderSpec, Decision};
pub use scaler::{Activity, RevisionScaler, Scale, ScalerSpec, Stat};
pub use target::{Metric, Target};
