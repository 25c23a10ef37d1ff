//! `switchyard reshard ...` and `switchyard movetables ...`: the moves' operator commands,
//! each one call of the admin API (`/api/v1/moves`).

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::ApiArgs;

/// `switchyard reshard`.
#[derive(Debug, clap::Subcommand)]
pub enum ReshardCommand {
    /// Start splitting or merging shards: copy, then follow, until the writes are switched.
    ///
    /// Example: switchyard reshard create split --keyspace app --from 80- --to 80-c0=c3
    /// --to c0-=c4
    Create {
        name: String,
        #[arg(long)]
        keyspace: String,
        /// A shard being replaced (repeat for a merge). Shard names may start with `-`.
        #[arg(long = "from", required = true, allow_hyphen_values = true)]
        from: Vec<String>,
        /// A new shard and its cluster, `RANGE=CLUSTER` (repeat).
        #[arg(long = "to", required = true, allow_hyphen_values = true)]
        to: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    #[command(flatten)]
    Action(MoveAction),
}

/// `switchyard movetables`.
#[derive(Debug, clap::Subcommand)]
pub enum MoveTablesCommand {
    /// Start moving unsharded tables into the keyspace's shards.
    ///
    /// Example: switchyard movetables create users --keyspace app --table users:id:hash
    Create {
        name: String,
        #[arg(long)]
        keyspace: String,
        /// `TABLE:COLUMN[:VINDEX]` (vindex `hash`, the default, or `numeric`; repeat).
        #[arg(long = "table", required = true)]
        tables: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    #[command(flatten)]
    Action(MoveAction),
}

/// What can be done to a move, whichever kind.
#[derive(Debug, clap::Subcommand)]
pub enum MoveAction {
    /// A move's state, streams (copy progress, position, transactions behind), cutovers and
    /// last events; every move without NAME.
    Status {
        name: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Compare sources and targets at one position (required clean before switch-writes).
    Diff {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send the writes to the new places (a short hold; prints its parts).
    SwitchWrites {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send the writes back to the old places.
    Reverse {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete the moved rows from the old places and stop the streams.
    Complete {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop a move that has not switched; drop its target tables.
    Cancel {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs `switchyard reshard ...`.
pub async fn reshard(cmd: ReshardCommand) -> anyhow::Result<()> {
    match cmd {
        ReshardCommand::Create {
            name,
            keyspace,
            from,
            to,
            api,
        } => {
            let to: Vec<Value> = to
                .iter()
                .map(|t| {
                    let (range, cluster) = t
                        .split_once('=')
                        .with_context(|| format!("--to {t}: expected RANGE=CLUSTER"))?;
                    Ok(json!({"name": range, "cluster": cluster}))
                })
                .collect::<anyhow::Result<_>>()?;
            let body = json!({"name": name, "kind": "reshard", "keyspace": keyspace,
                              "from": from, "to": to});
            let r = api.client()?.post("/api/v1/moves", body).await?;
            print!("{}", summary(&r));
            Ok(())
        }
        ReshardCommand::Action(a) => action(a).await,
    }
}

/// Runs `switchyard movetables ...`.
pub async fn move_tables(cmd: MoveTablesCommand) -> anyhow::Result<()> {
    match cmd {
        MoveTablesCommand::Create {
            name,
            keyspace,
            tables,
            api,
        } => {
            let tables: Vec<Value> = tables
                .iter()
                .map(|t| {
                    let parts: Vec<&str> = t.split(':').collect();
                    match parts.as_slice() {
                        [table, column] => Ok(json!({"name": table, "kind": "sharded",
                                                      "column": column, "vindex": "hash"})),
                        [table, column, vindex] => Ok(json!({"name": table, "kind": "sharded",
                                                              "column": column, "vindex": vindex})),
                        _ => anyhow::bail!("--table {t}: expected TABLE:COLUMN[:VINDEX]"),
                    }
                })
                .collect::<anyhow::Result<_>>()?;
            let body = json!({"name": name, "kind": "move_tables", "keyspace": keyspace,
                              "tables": tables});
            let r = api.client()?.post("/api/v1/moves", body).await?;
            print!("{}", summary(&r));
            Ok(())
        }
        MoveTablesCommand::Action(a) => action(a).await,
    }
}

async fn action(a: MoveAction) -> anyhow::Result<()> {
    let (api, path, diff) = match &a {
        MoveAction::Status { name: None, api } => {
            let all = api.client()?.get("/api/v1/moves").await?;
            for m in all["moves"].as_array().into_iter().flatten() {
                print!("{}", summary(m));
            }
            return Ok(());
        }
        MoveAction::Status { name: Some(n), api } => {
            let r = api.client()?.get(&format!("/api/v1/moves/{n}")).await?;
            print!("{}", summary(&r));
            return Ok(());
        }
        MoveAction::Diff { name, api } => (api, format!("/api/v1/moves/{name}/diff"), true),
        MoveAction::SwitchWrites { name, api } => {
            (api, format!("/api/v1/moves/{name}/switch-writes"), false)
        }
        MoveAction::Reverse { name, api } => (api, format!("/api/v1/moves/{name}/reverse"), false),
        MoveAction::Complete { name, api } => {
            (api, format!("/api/v1/moves/{name}/complete"), false)
        }
        MoveAction::Cancel { name, api } => (api, format!("/api/v1/moves/{name}/cancel"), false),
    };
    let r = api.client()?.post(&path, Value::Null).await?;
    if diff {
        println!("{}", serde_json::to_string_pretty(&r)?);
        if r["clean"] != json!(true) {
            std::process::exit(1);
        }
    } else {
        print!("{}", summary(&r));
    }
    Ok(())
}

/// A move's status as lines of text.
pub fn summary(m: &Value) -> String {
    let mut out = format!(
        "move {}: {} ({})\n",
        m["name"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        if m["copied"] == json!(true) {
            "copied"
        } else {
            "copying"
        }
    );
    for s in m["streams"].as_array().into_iter().flatten() {
        let st = &s["status"];
        out.push_str(&format!(
            "  {} {} -> {}: {}, {} rows copied, {} transactions applied, {} behind, at {}\n",
            s["name"].as_str().unwrap_or("?"),
            s["source"].as_str().unwrap_or("?"),
            s["target"].as_str().unwrap_or("?"),
            st["phase"].as_str().unwrap_or("not running"),
            st["rows_copied"],
            st["txns_applied"],
            s["behind_transactions"],
            st["pos"].as_str().unwrap_or("-"),
        ));
        if let Some(e) = st["error"].as_str() {
            out.push_str(&format!("    error: {e}\n"));
        }
    }
    if let Some(c) = m["cutovers"].as_array().and_then(|c| c.last()) {
        out.push_str(&format!(
            "  last cutover ({}): writes paused {} ms (drain {} ms, catch-up {} ms, publish {} ms), {} connections killed, shard map version {}\n",
            c["direction"].as_str().unwrap_or("?"),
            c["pause_ms"],
            c["drain_ms"],
            c["catch_up_ms"],
            c["publish_ms"],
            c["killed"],
            c["shard_map_version"]
        ));
    }
    let events = m["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in &events[events.len().saturating_sub(3)..] {
        out.push_str(&format!(
            "  event: {}\n",
            e["message"].as_str().unwrap_or("")
        ));
    }
    out
}
