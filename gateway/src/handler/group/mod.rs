//! The consumer-group APIs: finding the coordinator, classic membership (join, sync,
//! heartbeat, leave), KIP-848 membership (ConsumerGroupHeartbeat, ConsumerGroupDescribe),
//! committed offsets (commit, fetch, delete) and administration (list, describe, delete). The state machine they drive is [`crate::group`]; these files only
//! translate requests and answers.

pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod delete_groups;
pub mod describe_groups;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;
