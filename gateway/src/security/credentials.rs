//! SASL credentials: SCRAM credentials in the MetaStore (`gw/scram/{hex user}`: per mechanism a
//! salt, iterations, StoredKey and ServerKey, written by AlterUserScramCredentials with a
//! compare-and-swap, read at each authentication, so every gateway of a cluster sees a change at
//! once), and users configured with a password (`[sasl] users` / `users_file`: how the first
//! administrator exists before anyone can call AlterUserScramCredentials; the password is kept
//! only as SCRAM credentials derived at start-up). PLAIN checks a password against either.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use wal_core::meta::{Compare, MetaStore, Op, Txn};
use wal_core::MetaError;

use super::sasl::scram::{Mechanism, ScramCredential, MIN_ITERATIONS};

pub const PREFIX: &str = "gw/scram/";

fn key(user: &str) -> String {
    format!("{PREFIX}{}", user.bytes().map(|b| format!("{b:02x}")).collect::<String>())
}

fn user_of(key: &str) -> Option<String> {
    let hex = key.strip_prefix(PREFIX)?;
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

type Stored = BTreeMap<Mechanism, ScramCredential>;

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert { mech: Mechanism, iterations: u32, salt: Vec<u8>, salted_password: Vec<u8> },
    Delete { mech: Mechanism },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("attempt to delete a user credential that does not exist")]
    NotFound,
    #[error("{0}")]
    Meta(String),
}

pub struct Credentials {
    meta: Arc<dyn MetaStore>,
    /// Configured users: their credentials per mechanism.
    configured: HashMap<String, Stored>,
}

impl Credentials {
    pub fn new(meta: Arc<dyn MetaStore>, users: &BTreeMap<String, String>) -> Credentials {
        let configured = users
            .iter()
            .map(|(u, p)| {
                let creds = [Mechanism::Sha256, Mechanism::Sha512]
                    .into_iter()
                    .map(|m| (m, ScramCredential::from_password(m, p, MIN_ITERATIONS)))
                    .collect();
                (u.clone(), creds)
            })
            .collect();
        Credentials { meta, configured }
    }

    async fn stored(&self, user: &str) -> Result<(Stored, i64), MetaError> {
        match self.meta.get(&key(user)).await? {
            Some(kv) => Ok((serde_json::from_slice(&kv.value).unwrap_or_default(), kv.mod_revision)),
            None => Ok((Stored::new(), 0)),
        }
    }

    /// The credential a SCRAM exchange checks against (a configured user's first).
    pub async fn scram(&self, user: &str, mech: Mechanism) -> Result<Option<ScramCredential>, MetaError> {
        if let Some(c) = self.configured.get(user) {
            return Ok(c.get(&mech).cloned());
        }
        Ok(self.stored(user).await?.0.remove(&mech))
    }

    /// Whether `password` is the user's (PLAIN).
    pub async fn check_password(&self, user: &str, password: &str) -> Result<bool, MetaError> {
        let creds = match self.configured.get(user) {
            Some(c) => c.clone(),
            None => self.stored(user).await?.0,
        };
        // One check is enough: every mechanism's credential derives from the same password.
        Ok(creds.iter().next().is_some_and(|(m, c)| c.matches_password(*m, password)))
    }

    /// Applies one user's changes in one compare-and-swap (retried on a concurrent change).
    pub async fn alter(&self, user: &str, changes: &[Change]) -> Result<(), ChangeError> {
        for _ in 0..16 {
            let (mut stored, rev) = self.stored(user).await.map_err(|e| ChangeError::Meta(e.to_string()))?;
            for c in changes {
                match c {
                    Change::Upsert { mech, iterations, salt, salted_password } => {
                        stored.insert(*mech, ScramCredential::from_salted(*mech, salted_password, salt.clone(), *iterations));
                    }
                    Change::Delete { mech } => {
                        if stored.remove(mech).is_none() {
                            return Err(ChangeError::NotFound);
                        }
                    }
                }
            }
            let k = key(user);
            let op = if stored.is_empty() {
                Op::Delete(k.clone())
            } else {
                Op::put(k.clone(), Bytes::from(serde_json::to_vec(&stored).expect("credentials serialize")))
            };
            let r = self.meta.txn(Txn::new().when(Compare::ModRevision(k, rev)).then(op)).await;
            match r {
                Ok(r) if r.succeeded => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(ChangeError::Meta(e.to_string())),
            }
        }
        Err(ChangeError::Meta("too many concurrent changes to this user".into()))
    }

    /// Mechanisms and iterations per user: the named users, or every stored user.
    pub async fn describe(&self, users: Option<&[String]>) -> Result<Vec<(String, Vec<(Mechanism, u32)>)>, MetaError> {
        let summary = |s: &Stored| s.iter().map(|(m, c)| (*m, c.iterations)).collect::<Vec<_>>();
        match users {
            Some(list) => {
                let mut out = Vec::new();
                for u in list {
                    out.push((u.clone(), summary(&self.stored(u).await?.0)));
                }
                Ok(out)
            }
            None => {
                let listing = self.meta.list(PREFIX).await?;
                Ok(listing
                    .kvs
                    .iter()
                    .filter_map(|kv| {
                        let s: Stored = serde_json::from_slice(&kv.value).ok()?;
                        Some((user_of(&kv.key)?, summary(&s)))
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_round_trip_through_keys() {
        for u in ["alice", "a/b", "ünï", "with space", ""] {
            assert_eq!(user_of(&key(u)).as_deref(), Some(u));
        }
        assert_eq!(user_of("gw/scram/zz"), None);
    }

    #[tokio::test]
    async fn stored_and_configured_credentials() {
        let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
        let users = BTreeMap::from([("admin".to_string(), "adminpw".to_string())]);
        let c = Credentials::new(meta.clone(), &users);
        assert!(c.check_password("admin", "adminpw").await.unwrap());
        assert!(!c.check_password("admin", "nope").await.unwrap());
        assert!(c.scram("admin", Mechanism::Sha512).await.unwrap().is_some());

        let salt = b"0123456789abcdef".to_vec();
        let salted = Mechanism::Sha256.salted_password(b"alicepw", &salt, 4096);
        let up = Change::Upsert { mech: Mechanism::Sha256, iterations: 4096, salt, salted_password: salted };
        c.alter("alice", &[up]).await.unwrap();
        assert!(c.check_password("alice", "alicepw").await.unwrap());
        assert!(!c.check_password("alice", "adminpw").await.unwrap());
        assert!(c.scram("alice", Mechanism::Sha512).await.unwrap().is_none());
        // another gateway on the same store sees it
        let other = Credentials::new(meta.clone(), &BTreeMap::new());
        assert!(other.scram("alice", Mechanism::Sha256).await.unwrap().is_some());
        assert_eq!(other.describe(None).await.unwrap(), vec![("alice".to_string(), vec![(Mechanism::Sha256, 4096)])]);
        assert_eq!(c.alter("alice", &[Change::Delete { mech: Mechanism::Sha512 }]).await, Err(ChangeError::NotFound));
        c.alter("alice", &[Change::Delete { mech: Mechanism::Sha256 }]).await.unwrap();
        assert!(other.describe(None).await.unwrap().is_empty(), "the last credential gone: the user is gone");
        assert!(!c.check_password("alice", "alicepw").await.unwrap());
    }
}
