//! AlterUserScramCredentials (KIP-554): upserts carry the salted password the client derived
//! (never the password), deletions name a mechanism; each user's changes are one
//! compare-and-swap in the MetaStore, checked as Kafka's controller checks them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};
use crate::security::credentials::{Change, ChangeError};
use crate::security::sasl::scram::{Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};

type Refusal = (ResponseError, String);

fn check_upsert(mechanism: i8, iterations: i32, salt: &[u8], salted: &[u8]) -> Result<Mechanism, Refusal> {
    let mech = Mechanism::from_kafka_type(mechanism).ok_or((ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into()))?;
    if iterations < MIN_ITERATIONS as i32 {
        return Err((ResponseError::UnacceptableCredential, format!("Too few iterations: at least {MIN_ITERATIONS}")));
    }
    if iterations > MAX_ITERATIONS as i32 {
        return Err((ResponseError::UnacceptableCredential, format!("Too many iterations: at most {MAX_ITERATIONS}")));
    }
    if salt.is_empty() || salted.is_empty() {
        return Err((ResponseError::UnacceptableCredential, "The salt and the salted password must not be empty".into()));
    }
    Ok(mech)
}

pub async fn handle(b: Arc<Broker>, access: Access, req: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let mut changes: BTreeMap<String, Result<Vec<Change>, Refusal>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut add = |user: &str, mechanism: i8, change: Result<Change, Refusal>| {
        let entry = changes.entry(user.to_string()).or_insert_with(|| Ok(Vec::new()));
        let change = if user.is_empty() {
            Err((ResponseError::UnacceptableCredential, "Username must not be empty".to_string()))
        } else if !seen.insert((user.to_string(), mechanism)) {
            Err((ResponseError::DuplicateResource, "A user credential cannot be altered twice in the same request".to_string()))
        } else {
            change
        };
        match (entry.as_mut(), change) {
            (Ok(list), Ok(c)) => list.push(c),
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    };
    for d in &req.deletions {
        let c = Mechanism::from_kafka_type(d.mechanism)
            .map(|mech| Change::Delete { mech })
            .ok_or((ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".to_string()));
        add(&d.name, d.mechanism, c);
    }
    for u in &req.upsertions {
        let c = check_upsert(u.mechanism, u.iterations, &u.salt, &u.salted_password).map(|mech| Change::Upsert {
            mech,
            iterations: u.iterations as u32,
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
        });
        add(&u.name, u.mechanism, c);
    }
    let allowed = super::may_administer(&access, op::ALTER);
    let mut results = Vec::with_capacity(changes.len());
    for (user, change) in changes {
        let outcome = match change {
            _ if !allowed => Err((ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed".to_string())),
            Err(e) => Err(e),
            Ok(list) => b.credentials.alter(&user, &list).await.map_err(|e| match e {
                ChangeError::NotFound => (ResponseError::ResourceNotFound, e.to_string()),
                ChangeError::Meta(m) => (ResponseError::UnknownServerError, m),
            }),
        };
        let r = AlterUserScramCredentialsResult::default().with_user(s(user));
        results.push(match outcome {
            Ok(()) => r,
            Err((e, msg)) => r.with_error_code(e.code()).with_error_message(Some(s(msg))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}
