//! The `ledger` service: the event log backends, the projector runtime and
//! the command line. See `docs/ARCHITECTURE.md` for the map.

pub mod audit;
pub mod bench;
mod bench_decide;
pub mod cli;
pub mod client;
pub mod command;
pub mod decide;
pub mod demo;
pub mod engine;
pub mod explain;
pub mod log;
pub mod nats;
pub mod natsd;
pub mod projector;
pub mod report;
pub mod serve;
