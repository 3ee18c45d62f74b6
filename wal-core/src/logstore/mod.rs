//! QuorumBuffer: LogStore nodes and the client side that replicates to them.
//!
//! In QuorumBuffer mode a writer sends every block to the nodes of its segment's set (3 by
//! default) and acknowledges once `ack_quorum` (2) of them hold it; the nodes upload the blocks
//! to object storage in the background, and the writer commits segment metadata as blocks become
//! stored. See [`replica`] for the replica rules (a pure state machine), [`node`] for the node service (TCP server, uploader, journal hook-up), [`client`] for connections and discovery, and
//! `log::quorum` for the writer and recovery logic.
//!
//! Discovery: every node registers `logstore/nodes/{id}` = [`NodeInfo`] in the MetaStore under
//! a lease, so a node that dies disappears after the lease TTL.

pub mod client;
pub mod journal;
pub mod node;
pub mod proto;
pub mod replica;

use serde::{Deserialize, Serialize};

pub use client::Replication;
pub use node::{LogStoreNode, NodeConfig};

/// A registered node, and a replica as a segment's metadata records it. The incarnation changes
/// at every start of the node process: a replica with another incarnation has lost its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
}

pub const REGISTRATION_PREFIX: &str = "logstore/nodes/";

pub fn registration_key(id: &str) -> String {
    format!("{REGISTRATION_PREFIX}{id}")
}
