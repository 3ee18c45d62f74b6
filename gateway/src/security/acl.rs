//! ACLs with Kafka's model: a binding names a resource pattern (type, name, LITERAL or
//! PREFIXED; the literal name `*` is every resource of the type), a principal (`User:name` or
//! `User:*`), a host (`*` or an address), an operation and ALLOW or DENY. The
//! [`Authorizer`] decides as Kafka's StandardAuthorizer: super users may do everything; a
//! matching DENY wins over any ALLOW; READ, WRITE, DELETE and ALTER imply DESCRIBE and
//! ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL matches every operation; a resource no binding
//! names at all is allowed only with `allow_everyone_if_no_acl_found`.
//!
//! Bindings live in the MetaStore (`gw/acl/{digest}`, one key per binding) and every gateway
//! re-reads them every `acl_poll_ms` (and at once after its own changes), so a cluster enforces
//! the same ACLs within one poll. With `authorizer = false` (the default, as Kafka without an
//! `authorizer.class.name`) everything is allowed.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use wal_core::meta::{MetaStore, Op, Txn};
use wal_core::MetaError;

use super::ConnInfo;

pub const PREFIX: &str = "gw/acl/";

/// Kafka's resource types (AclResourceType codes).
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// Kafka's pattern types.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's operations.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Kafka's permission types.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The only cluster resource's name.
pub const CLUSTER_NAME: &str = "kafka-cluster";
pub const WILDCARD: &str = "*";

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub name: String,
    pub pattern: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// Why a binding cannot be created (Kafka's INVALID_REQUEST messages).
pub fn validate(b: &AclBinding) -> Result<(), String> {
    if !(resource::TOPIC..=resource::USER).contains(&b.resource_type) {
        return Err("Invalid resource type".into());
    }
    if !matches!(b.pattern, pattern::LITERAL | pattern::PREFIXED) {
        return Err("Invalid pattern type: only LITERAL and PREFIXED bindings can be created".into());
    }
    if b.name.is_empty() {
        return Err("Resource name must not be empty".into());
    }
    if b.resource_type == resource::CLUSTER && (b.name != CLUSTER_NAME || b.pattern != pattern::LITERAL) {
        return Err(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
    }
    if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&b.operation) {
        return Err("Invalid operation".into());
    }
    if !matches!(b.permission, permission::ALLOW | permission::DENY) {
        return Err("Invalid permission type".into());
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Err(format!(
                "Could not parse principal from `{}` (no colon is present separating the principal type from the principal name)",
                b.principal
            ))
        }
    }
    if b.host.is_empty() {
        return Err("Host must not be empty".into());
    }
    Ok(())
}

/// A DescribeAcls / DeleteAcls filter; `None` fields match anything.
#[derive(Debug, Clone, Default)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// A filter from the fields DescribeAcls and DeleteAcls both carry, checked.
    pub fn from_request(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        let f = AclFilter {
            resource_type,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation,
            permission,
        };
        f.validate().map(|_| f)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type < resource::ANY || self.resource_type > resource::USER {
            return Err("Invalid resource type filter".into());
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern) {
            return Err("Invalid pattern type filter".into());
        }
        if !(op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err("Invalid operation filter".into());
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return Err("Invalid permission type filter".into());
        }
        Ok(())
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (&self.name, self.pattern) {
            (None, p) => p == pattern::ANY || p == pattern::MATCH || p == b.pattern,
            // MATCH: the bindings that would apply to a resource of this name
            (Some(n), pattern::MATCH) => resource_matches(b, n),
            (Some(n), pattern::ANY) => *n == b.name,
            (Some(n), p) => p == b.pattern && *n == b.name,
        };
        (self.resource_type == resource::ANY || self.resource_type == b.resource_type)
            && name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission == permission::ANY || self.permission == b.permission)
    }
}

/// Whether a binding's pattern covers the resource `name` (of the binding's type).
fn resource_matches(b: &AclBinding, name: &str) -> bool {
    match b.pattern {
        pattern::LITERAL => b.name == name || b.name == WILDCARD,
        pattern::PREFIXED => name.starts_with(&b.name),
        _ => false,
    }
}

/// The operations a binding's operation also grants (Kafka's implied operations).
fn grants(binding_op: i8, wanted: i8) -> bool {
    binding_op == wanted
        || binding_op == op::ALL
        || (wanted == op::DESCRIBE && matches!(binding_op, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && binding_op == op::ALTER_CONFIGS)
}

fn key_of(b: &AclBinding) -> String {
    let json = serde_json::to_vec(b).expect("binding serializes");
    let digest = crate::security::sasl::scram::Mechanism::Sha256.hash(&json);
    format!("{PREFIX}{}", digest[..16].iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// The `[acl]` settings the authorizer runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Enforce ACLs (Kafka's `authorizer.class.name` set); off: everything is allowed.
    pub authorizer: bool,
    /// Kafka's `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
    /// How often every gateway re-reads the bindings.
    pub poll_ms: u64,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig { authorizer: false, allow_everyone_if_no_acl_found: false, poll_ms: 1000 }
    }
}

pub struct Authorizer {
    meta: Arc<dyn MetaStore>,
    pub cfg: AclConfig,
    super_users: Vec<String>,
    bindings: RwLock<Arc<BTreeSet<AclBinding>>>,
}

impl Authorizer {
    pub fn new(meta: Arc<dyn MetaStore>, cfg: AclConfig, super_users: Vec<String>) -> Authorizer {
        Authorizer { meta, cfg, super_users, bindings: RwLock::new(Arc::default()) }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.authorizer
    }

    pub fn bindings(&self) -> Arc<BTreeSet<AclBinding>> {
        self.bindings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads every binding from the MetaStore.
    pub async fn refresh(&self) -> Result<(), MetaError> {
        let listing = self.meta.list(PREFIX).await?;
        let set: BTreeSet<AclBinding> = listing.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
        *self.bindings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    pub fn super_users(&self) -> &[String] {
        &self.super_users
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|u| u == principal)
    }

    /// Whether `principal` from `host` may do `operation` on the resource.
    pub fn allowed(&self, principal: &str, host: &str, operation: i8, resource_type: i8, name: &str) -> bool {
        if !self.enabled() || self.is_super_user(principal) {
            return true;
        }
        let bindings = self.bindings();
        let mut any_for_resource = false;
        let mut allow = false;
        for b in bindings.iter().filter(|b| b.resource_type == resource_type && resource_matches(b, name)) {
            any_for_resource = true;
            let who = b.principal == principal || b.principal == "User:*";
            let from = b.host == WILDCARD || b.host == host;
            if !(who && from) {
                continue;
            }
            if b.permission == permission::DENY && (b.operation == operation || b.operation == op::ALL) {
                return false;
            }
            if b.permission == permission::ALLOW && grants(b.operation, operation) {
                allow = true;
            }
        }
        allow || (!any_for_resource && self.cfg.allow_everyone_if_no_acl_found)
    }

    /// Whether some binding of `resource_type` lets the principal do `operation` on at least one
    /// resource (Kafka's authorization by resource type: idempotent producers need WRITE on some
    /// topic or IDEMPOTENT_WRITE on the cluster).
    pub fn allowed_on_some(&self, principal: &str, host: &str, operation: i8, resource_type: i8) -> bool {
        if !self.enabled() || self.is_super_user(principal) {
            return true;
        }
        let bindings = self.bindings();
        bindings.iter().any(|b| {
            b.resource_type == resource_type
                && b.permission == permission::ALLOW
                && grants(b.operation, operation)
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == WILDCARD || b.host == host)
                && !bindings.iter().any(|d| {
                    d.permission == permission::DENY
                        && d.resource_type == resource_type
                        && d.pattern == b.pattern
                        && d.name == b.name
                        && (d.operation == operation || d.operation == op::ALL)
                        && (d.principal == principal || d.principal == "User:*")
                        && (d.host == WILDCARD || d.host == host)
                })
        })
    }

    /// Stores new bindings (one key each; creating an existing one is no change).
    pub async fn create(&self, bindings: &[AclBinding]) -> Result<(), MetaError> {
        for chunk in bindings.chunks(64) {
            let ops = chunk.iter().map(|b| Op::put(key_of(b), serde_json::to_vec(b).expect("binding serializes"))).collect();
            self.meta.txn(Txn { compares: Vec::new(), ops }).await?;
        }
        self.refresh().await
    }

    /// Deletes the bindings matching `filter`; returns them.
    pub async fn delete(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, MetaError> {
        self.refresh().await?;
        let gone: Vec<AclBinding> = self.bindings().iter().filter(|b| filter.matches(b)).cloned().collect();
        for chunk in gone.chunks(64) {
            let ops = chunk.iter().map(|b| Op::Delete(key_of(b))).collect();
            self.meta.txn(Txn { compares: Vec::new(), ops }).await?;
        }
        self.refresh().await?;
        Ok(gone)
    }
}

/// One connection's view of the authorizer: who is asking, from where. The principal is read
/// from the connection only when a check needs it (not per request when ACLs are off).
#[derive(Clone)]
pub struct Access {
    pub authorizer: Arc<Authorizer>,
    pub conn: Arc<ConnInfo>,
}

impl Access {
    pub fn principal(&self) -> String {
        self.conn.principal()
    }

    /// The client address without the leading `/`.
    fn host(&self) -> &str {
        self.conn.client_host.trim_start_matches('/')
    }

    pub fn allowed(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        !self.authorizer.enabled() || self.authorizer.allowed(&self.principal(), self.host(), operation, resource_type, name)
    }

    pub fn topic(&self, operation: i8, topic: &str) -> bool {
        self.allowed(operation, resource::TOPIC, topic)
    }

    pub fn group(&self, operation: i8, group: &str) -> bool {
        self.allowed(operation, resource::GROUP, group)
    }

    pub fn cluster(&self, operation: i8) -> bool {
        self.allowed(operation, resource::CLUSTER, CLUSTER_NAME)
    }

    pub fn transactional_id(&self, operation: i8, id: &str) -> bool {
        self.allowed(operation, resource::TRANSACTIONAL_ID, id)
    }

    /// An idempotent producer: IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    pub fn idempotent_write(&self) -> bool {
        self.cluster(op::IDEMPOTENT_WRITE) || self.authorizer.allowed_on_some(&self.principal(), self.host(), op::WRITE, resource::TOPIC)
    }

    /// Everything allowed (tests and internal callers).
    pub fn all() -> Access {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        Access { authorizer: Arc::new(Authorizer::new(meta, AclConfig::default(), Vec::new())), conn: ConnInfo::plaintext("/127.0.0.1") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pat: i8, who: &str, host: &str, operation: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern: pat,
            principal: who.into(),
            host: host.into(),
            operation,
            permission: perm,
        }
    }

    async fn authorizer(allow_if_none: bool) -> Authorizer {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let cfg = AclConfig { authorizer: true, allow_everyone_if_no_acl_found: allow_if_none, poll_ms: 1000 };
        Authorizer::new(meta, cfg, vec!["User:root".into()])
    }

    #[tokio::test]
    async fn deny_wins_prefixes_match_and_operations_imply_describe() {
        let a = authorizer(false).await;
        use resource::*;
        a.create(&[
            acl(TOPIC, "orders-", pattern::PREFIXED, "User:alice", "*", op::WRITE, permission::ALLOW),
            acl(TOPIC, "orders-secret", pattern::LITERAL, "User:alice", "*", op::ALL, permission::DENY),
            acl(TOPIC, "*", pattern::LITERAL, "User:*", "*", op::READ, permission::ALLOW),
            acl(TOPIC, "*", pattern::LITERAL, "User:mallory", "10.0.0.9", op::READ, permission::DENY),
            acl(GROUP, "g1", pattern::LITERAL, "User:bob", "127.0.0.1", op::READ, permission::ALLOW),
            acl(TOPIC, "conf", pattern::LITERAL, "User:bob", "*", op::ALTER_CONFIGS, permission::ALLOW),
        ])
        .await
        .unwrap();
        assert!(a.allowed("User:alice", "1.2.3.4", op::WRITE, TOPIC, "orders-eu"));
        assert!(a.allowed("User:alice", "1.2.3.4", op::DESCRIBE, TOPIC, "orders-eu"), "WRITE implies DESCRIBE");
        assert!(!a.allowed("User:alice", "1.2.3.4", op::DELETE, TOPIC, "orders-eu"));
        assert!(!a.allowed("User:alice", "1.2.3.4", op::WRITE, TOPIC, "orders-secret"), "DENY beats the prefixed ALLOW");
        assert!(!a.allowed("User:alice", "1.2.3.4", op::READ, TOPIC, "orders-secret"), "DENY ALL beats the wildcard READ");
        assert!(!a.allowed("User:alice", "1.2.3.4", op::WRITE, TOPIC, "payments"));
        assert!(a.allowed("User:carol", "1.2.3.4", op::READ, TOPIC, "payments"), "User:* and the literal *");
        assert!(a.allowed("User:mallory", "10.0.0.8", op::READ, TOPIC, "payments"));
        assert!(!a.allowed("User:mallory", "10.0.0.9", op::READ, TOPIC, "payments"), "a DENY for one host");
        assert!(a.allowed("User:bob", "127.0.0.1", op::READ, GROUP, "g1"));
        assert!(!a.allowed("User:bob", "127.0.0.2", op::READ, GROUP, "g1"), "the host must match");
        assert!(a.allowed("User:bob", "h", op::DESCRIBE_CONFIGS, TOPIC, "conf"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
        assert!(!a.allowed("User:bob", "h", op::DESCRIBE, GROUP, "other"), "nothing names it: denied");
        assert!(a.allowed("User:root", "h", op::DELETE, CLUSTER, CLUSTER_NAME), "a super user");
        let open = authorizer(true).await;
        assert!(open.allowed("User:x", "h", op::DELETE, GROUP, "free"), "allow.everyone.if.no.acl.found");
        open.create(&[acl(GROUP, "free", pattern::LITERAL, "User:y", "*", op::READ, permission::ALLOW)]).await.unwrap();
        assert!(!open.allowed("User:x", "h", op::READ, GROUP, "free"), "once a binding names it, only its grants count");
    }

    #[tokio::test]
    async fn filters_describe_and_delete() {
        let a = authorizer(false).await;
        let b1 = acl(resource::TOPIC, "t-", pattern::PREFIXED, "User:a", "*", op::READ, permission::ALLOW);
        let b2 = acl(resource::TOPIC, "t-1", pattern::LITERAL, "User:b", "*", op::WRITE, permission::DENY);
        let b3 = acl(resource::GROUP, "g", pattern::LITERAL, "User:a", "*", op::READ, permission::ALLOW);
        a.create(&[b1.clone(), b2.clone(), b3.clone(), b1.clone()]).await.unwrap();
        assert_eq!(a.bindings().len(), 3, "creating a binding twice stores it once");
        let any = AclFilter {
            resource_type: resource::ANY,
            pattern: pattern::ANY,
            operation: op::ANY,
            permission: permission::ANY,
            ..Default::default()
        };
        let matching = AclFilter { resource_type: resource::TOPIC, name: Some("t-1".into()), pattern: pattern::MATCH, ..any.clone() };
        let got: Vec<_> = a.bindings().iter().filter(|b| matching.matches(b)).cloned().collect();
        assert_eq!(got.len(), 2, "MATCH: the literal and the prefix that apply to t-1");
        let by_principal = AclFilter { principal: Some("User:a".into()), ..any.clone() };
        assert_eq!(a.delete(&by_principal).await.unwrap().len(), 2);
        assert_eq!(a.bindings().iter().cloned().collect::<Vec<_>>(), vec![b2]);
        for bad in [
            acl(resource::CLUSTER, "other", pattern::LITERAL, "User:a", "*", op::ALTER, permission::ALLOW),
            acl(resource::TOPIC, "t", pattern::MATCH, "User:a", "*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, "t", pattern::LITERAL, "alice", "*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, "t", pattern::LITERAL, "User:a", "*", op::ANY, permission::ALLOW),
            acl(resource::ANY, "t", pattern::LITERAL, "User:a", "*", op::READ, permission::ALLOW),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
