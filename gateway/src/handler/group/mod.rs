//! The consumer-group APIs (classic protocol): finding the coordinator, membership (join,
//! sync, heartbeat, leave), committed offsets (commit, fetch, delete) and administration (list,
//! describe, delete). The state machine they drive is [`crate::group`]; these files only
//! translate requests and answers.

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
