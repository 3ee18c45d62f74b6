//! The security APIs that are requests like any other: ACLs (CreateAcls, DescribeAcls,
//! DeleteAcls), client quotas (DescribeClientQuotas, AlterClientQuotas) and SCRAM credential
//! management (KIP-554).
//! SaslHandshake and SaslAuthenticate change the connection itself and are handled by the
//! server (`server.rs` with `security::sasl`).

pub mod alter_client_quotas;
pub mod alter_user_scram_credentials;
pub mod create_acls;
pub mod delete_acls;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_user_scram_credentials;

use crate::security::acl::Access;

/// Whether the principal may do `operation` on the cluster (ALTER to change credentials,
/// DESCRIBE to list them). Without the authorizer: a super user, or anyone when no super users
/// are configured (Kafka without an authorizer allows everything).
pub fn may_administer(access: &Access, operation: i8) -> bool {
    if access.authorizer.enabled() {
        return access.cluster(operation);
    }
    access.authorizer.super_users().is_empty() || access.authorizer.is_super_user(&access.principal())
}
