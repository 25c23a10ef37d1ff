//! Sharded keyspaces: which shard(s) a statement on a sharded or reference table goes to.
//!
//! A plan is correct or refused: a statement goes to one shard only when the shard key's
//! value(s) in it prove that every row it can touch lives there; DDL goes to every shard;
//! reads over several shards are relayed or merged ([`gather`]) when the router can prove
//! the merged result is the server's; anything else on a sharded table is refused with error 1235 naming what is not supported,
//! never sent where it would give a wrong answer.

pub mod fill;
pub mod gather;
mod join;
pub mod literals;
pub mod params;
pub mod plan;
pub mod split;

pub use plan::{plan, Plan, PlanInput};
