//! `cargo bench --bench etcd`: the `etcd` part of `switchyard bench` — three routers and two
//! orchestrators over etcd against one process (see `switchyard::bench::etcd`). One trial by
//! default; `SWITCHYARD_BENCH_TRIALS=3` for more, `SWITCHYARD_BENCH_OUT` for where the results
//! go.

/// The allocator of the `switchyard` binary, so that the router here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // The "orchestrator lost" row starts a real `switchyard serve`.
    switchyard::bench::etcd::set_serve_binary(env!("CARGO_BIN_EXE_switchyard"));
    switchyard::bench::cargo::main("etcd", "etcd")
}
