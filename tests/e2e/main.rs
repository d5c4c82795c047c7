//! End-to-end tests of the local platform: the real `sluice` binary, a real daemon with its
//! activator and queue-proxy child processes, real user processes, HTTP on loopback; and of
//! the Kubernetes platform: the same binaries against a real API server, and on a real node
//! (`tests/node/run`).

mod autoscaling;
mod faults;
mod grpc;
mod harness;
mod kn;
mod kubernetes;
mod lifecycle;
mod namespaces;
mod real_node;
mod rollout;
mod serving;
mod storage;
mod traffic;
mod validation;
mod websocket;

use sluice_test_support::apiserver;
