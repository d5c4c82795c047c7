//! What the benchmark programs share: loopback helpers ([`net`]).
//!
//! Owns measurement code only. Nothing in Sluice depends on it.

pub mod net;
