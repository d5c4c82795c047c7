//! The CLI's commands.

pub mod apply;
pub mod describe;
pub mod export;
pub mod listing;
pub mod output;
pub mod quickstart;
pub mod service;
pub mod traffic;
pub mod wait;
