//! Scale decisions for revisions. This slice holds the scale bounds: how many replicas a
//! revision starts with and the floor and ceiling any later decision is clamped to, from the
//! revision's `autoscaling.knative.dev/*` annotations over config-autoscaler.

pub mod bounds;

pub use bounds::ScaleBounds;
