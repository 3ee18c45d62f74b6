//! Security as Kafka clients expect it: named listeners with their own security protocol
//! (`listeners.rs`), TLS with hot certificate reload and client certificates (`tls.rs`, the
//! principal from the certificate subject by Kafka's mapping rules in `principal.rs`), and SASL
//! (`sasl/`: SaslHandshake + SaslAuthenticate in both framings, PLAIN and SCRAM-SHA-256/512, re-
//! authentication) against credentials kept in the MetaStore (`credentials.rs`), and ACLs
//! (`acl.rs`: Kafka's model and authorizer, the bindings in the MetaStore).
//!
//! Every connection carries a [`ConnInfo`]: the listener it came in on (Metadata advertises that
//! listener's addresses) and the principal it authenticated as (`User:ANONYMOUS` until then, as
//! Kafka names it).

pub mod acl;
pub mod credentials;
pub mod listeners;
pub mod principal;
pub mod quota;
pub mod sasl;
pub mod tls;

use std::sync::{Arc, RwLock};

pub use listeners::{Listener, SecurityProtocol};

/// Kafka's name for a connection that has not authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// What the handlers know of the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// `/ip`, as Kafka reports client hosts.
    pub client_host: String,
    pub listener: Arc<Listener>,
    principal: RwLock<String>,
}

impl ConnInfo {
    pub fn new(client_host: String, listener: Arc<Listener>, principal: String) -> Arc<ConnInfo> {
        Arc::new(ConnInfo { client_host, listener, principal: RwLock::new(principal) })
    }

    /// A plaintext connection on the default listener (tests and internal callers).
    pub fn plaintext(client_host: &str) -> Arc<ConnInfo> {
        ConnInfo::new(client_host.to_string(), Arc::new(Listener::default()), ANONYMOUS.to_string())
    }

    /// `User:name` once authenticated (SASL or a client certificate), else `User:ANONYMOUS`.
    pub fn principal(&self) -> String {
        self.principal.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_principal(&self, p: String) {
        *self.principal.write().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
