//! End-to-end tests of the local platform: the real `sluice` binary, a real daemon with its
//! activator and queue-proxy child processes, real user processes, HTTP on loopback.

mod autoscaling;
mod harness;
mod lifecycle;
mod rollout;
mod serving;
mod traffic;
mod validation;
