//! The security APIs that are requests like any other: SCRAM credential management (KIP-554).
//! SaslHandshake and SaslAuthenticate change the connection itself and are handled by the
//! server (`server.rs` with `security::sasl`).

pub mod alter_user_scram_credentials;
pub mod describe_user_scram_credentials;

use crate::broker::Broker;
use crate::security::ConnInfo;

/// Whether the connection's principal may manage credentials: a super user, or anyone when no
/// super users are configured (Kafka without an authorizer).
pub fn may_administer(b: &Broker, conn: &ConnInfo) -> bool {
    b.cfg.super_users.is_empty() || b.cfg.super_users.iter().any(|u| *u == conn.principal())
}
