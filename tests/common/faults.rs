//! The fault kit (a frozen process, a blackholed port), as the benchmark uses it; a test that
//! cannot inject its fault fails, saying why.

pub use switchyard::bench::faults::{Blackhole, DiskFull, Frozen};

/// Freezes `pid` (`SIGSTOP`) until the guard is thawed or dropped.
pub fn freeze(pid: u32) -> Frozen {
    switchyard::bench::faults::freeze(pid).unwrap_or_else(|e| panic!("freezing {pid}: {e}"))
}

/// Drops every packet of a loopback port until the guard is healed or dropped.
pub fn blackhole(port: u16) -> Blackhole {
    switchyard::bench::faults::blackhole(port).unwrap_or_else(|e| panic!("{e}"))
}

/// Fills the filesystem of `dir` (a node's own binary-log disk) until the guard frees it.
pub fn fill_disk(dir: &std::path::Path) -> DiskFull {
    switchyard::bench::faults::fill_disk(dir)
        .unwrap_or_else(|e| panic!("filling {}: {e}", dir.display()))
}

/// Drops the traffic between a loopback port and connections from `source` only.
pub fn blackhole_from(port: u16, source: std::net::Ipv4Addr) -> Blackhole {
    switchyard::bench::faults::blackhole_from(port, source).unwrap_or_else(|e| panic!("{e}"))
}

/// Drops the traffic between a loopback port and connections from `from`, but for the
/// established ones from the client ports `spare`.
pub fn blackhole_except(port: u16, from: std::net::Ipv4Addr, spare: &[u16]) -> Blackhole {
    switchyard::bench::faults::blackhole_except(port, from, spare).unwrap_or_else(|e| panic!("{e}"))
}
