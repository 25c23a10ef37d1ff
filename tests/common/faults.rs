//! The fault kit (a frozen process, a blackholed port), as the benchmark uses it; a test that
//! cannot inject its fault fails, saying why.

pub use switchyard::bench::faults::{Blackhole, Frozen};

/// Freezes `pid` (`SIGSTOP`) until the guard is thawed or dropped.
pub fn freeze(pid: u32) -> Frozen {
    switchyard::bench::faults::freeze(pid).unwrap_or_else(|e| panic!("freezing {pid}: {e}"))
}

/// Drops every packet of a loopback port until the guard is healed or dropped.
pub fn blackhole(port: u16) -> Blackhole {
    switchyard::bench::faults::blackhole(port).unwrap_or_else(|e| panic!("{e}"))
}
