//! imago: a message broker in the MetaQ/Metamorphosis line.
//!
//! Module map (one concern each):
//! - [`store`]: the commitlog, per-partition indexes, flush, recovery, retention (no networking).
//! - [`protocol`]: bytes to requests and replies to bytes (pure, no I/O).
//! - [`broker`]: requests to store calls, topics, stats.
//! - [`server`]: the mio event loop, connections, buffers, timers.
//! - [`config`]: command-line flags and the config file.

pub mod broker;
pub mod config;
pub mod groups;
pub mod protocol;
pub mod server;
pub mod store;
