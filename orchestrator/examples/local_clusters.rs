//! Starts local clusters and reports how long each phase takes:
//! `cargo run -p orchestrator --example local_clusters -- [CLUSTERS] [REPLICAS] [DIR]`.
//! A fresh start, a stop, a restart on the same directory, and a final stop. Without DIR a
//! temporary directory is used and removed; a given DIR is kept (and reused if it exists).

use std::time::Instant;

use orchestrator::{LocalClusters, ProvisionSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clusters = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let replicas = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = clusters;
    spec.replicas = replicas;

    let t = Instant::now();
    let lc = LocalClusters::start(spec.clone()).await?;
    println!(
        "fresh start of {clusters} x {} nodes: {:?}",
        replicas + 1,
        t.elapsed()
    );
    for c in lc.clusters() {
        let addrs: Vec<&str> = c.nodes.iter().map(|n| n.addr.as_str()).collect();
        println!("  {}: leader {} nodes {addrs:?}", c.name, c.leader);
    }
    let t = Instant::now();
    lc.stop().await?;
    println!("stop: {:?}", t.elapsed());

    let t = Instant::now();
    let lc = LocalClusters::start(spec).await?;
    println!("restart on the same directory: {:?}", t.elapsed());
    let t = Instant::now();
    lc.stop().await?;
    println!("stop: {:?}", t.elapsed());
    Ok(())
}
