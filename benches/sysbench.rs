//! `cargo bench --bench sysbench`: the sysbench rows of `switchyard bench` (direct, switchyard,
//! HAProxy), quick by default (about a minute), built with the bench profile. Settings come
//! from the environment (see `switchyard::bench::cargo`): `SWITCHYARD_BENCH_FULL=1` for the
//! full run, `SWITCHYARD_BENCH_ONLY`, `_THREADS`, `_SECONDS`, `_REPEAT`, `_OUT`.

/// The allocator of the `switchyard` binary, so that the router here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    switchyard::bench::cargo::main("sysbench", "oltp_")
}
