//! The `ledger` service: the event log backends, the engine, the projector
//! runtime, the NATS service, audit and the command line. See
//! `docs/ARCHITECTURE.md` for the map; each folder imports only downward
//! (`tests/architecture.rs` checks it).

pub mod apply;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod engine;
pub mod log;
pub mod notify;
pub mod projector;
pub mod report;
pub mod serve;
pub mod store;

// The command types and the decider are the library's public API at the
// crate root too (tests, fuzz targets and benches name them so).
pub use engine::{command, decide};
