//! `cargo bench --bench failover`: the failover rows of `switchyard bench`, `kill -9` of the
//! leader and a planned switchover under writes through the router, each trial on fresh
//! servers (see `switchyard::bench::failover`). One trial of each by default;
//! `SWITCHYARD_BENCH_TRIALS=10` for more, `SWITCHYARD_BENCH_OUT` for where the results go.

/// The allocator of the `switchyard` binary, so that the router here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    switchyard::bench::cargo::main("failover", "failover")
}
