//! Label and annotation keys, spelled as Knative spells them.

/// Label on Configuration, Route and Revision naming the owning Service.
pub const SERVICE: &str = "serving.knative.dev/service";
/// Label on a Revision naming its Configuration.
pub const CONFIGURATION: &str = "serving.knative.dev/configuration";
/// Label on a Revision: the Configuration generation that stamped it.
pub const CONFIGURATION_GENERATION: &str = "serving.knative.dev/configurationGeneration";
/// Label on a Revision: the UID of its Configuration.
pub const CONFIGURATION_UID: &str = "serving.knative.dev/configurationUID";
/// Label on a Revision: the UID of its Service.
pub const SERVICE_UID: &str = "serving.knative.dev/serviceUID";
/// Label on a Route naming itself (set on its children by Knative).
pub const ROUTE: &str = "serving.knative.dev/route";
/// Label on a Revision: `pending`, `active` or `reserve`.
pub const ROUTING_STATE: &str = "serving.knative.dev/routingState";
/// Annotation: comma-separated names of the routes pointing at a revision or configuration.
pub const ROUTES: &str = "serving.knative.dev/routes";
/// Annotation: who created the object.
pub const CREATOR: &str = "serving.knative.dev/creator";
/// Annotation: who changed the object last.
pub const LAST_MODIFIER: &str = "serving.knative.dev/lastModifier";
/// Annotation: keep this revision from garbage collection.
pub const NO_GC: &str = "serving.knative.dev/no-gc";
/// Annotation: gradual rollout duration of a Service or Route.
pub const ROLLOUT_DURATION: &str = "serving.knative.dev/rollout-duration";
/// kubectl's record of the last applied manifest (never propagated).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Label on a Revision's children (Deployment, pods, services) naming the revision.
pub const REVISION: &str = "serving.knative.dev/revision";
/// Annotation on a Route: the gradual rollout in progress (JSON), Route-owned state.
pub const ROLLOUT: &str = "serving.knative.dev/rollout";
/// Annotation on a Revision: when its routing state last changed (config-gc's last-active
/// time).
pub const ROUTING_STATE_MODIFIED: &str = "serving.knative.dev/routingStateModified";
/// Annotation kn sets on every update it makes.
pub const CLIENT_UPDATE_TIMESTAMP: &str = "client.knative.dev/updateTimestamp";
/// The prefix of every label and annotation Serving sets itself.
pub const SERVING_PREFIX: &str = "serving.knative.dev/";
/// Annotation on a revision template: how long its replicas may take to first become ready
/// before the revision fails with `ProgressDeadlineExceeded` (Knative's, default 600 s).
pub const PROGRESS_DEADLINE: &str = "serving.knative.dev/progress-deadline";
