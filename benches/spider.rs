//! `cargo bench --bench spider`: the sharded rows of `switchyard bench`, switchyard against
//! MariaDB Spider over the same shards (see `switchyard::bench::sharded`), quick by default.
//! Settings come from the environment (see `switchyard::bench::cargo`):
//! `SWITCHYARD_BENCH_FULL=1` for all six workloads at 1, 8 and 64 threads,
//! `SWITCHYARD_BENCH_THREADS`, `_SECONDS`, `_ROWS` (rows per shard), `_REPEAT`, `_OUT`.

/// The allocator of the `switchyard` binary, so that the router here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    switchyard::bench::cargo::main("spider", "sharded")
}
