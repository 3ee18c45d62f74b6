//! DescribeUserScramCredentials (KIP-554): the mechanisms and iteration counts of the named
//! users (or of every user with a stored credential), never a salt or key.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::handler::s;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, access: Access, req: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    if !super::may_administer(&access, op::DESCRIBE) {
        return resp
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(s("Cluster authorization failed")));
    }
    // Null or empty: every user (librdkafka sends an empty array for "all").
    let names: Option<Vec<String>> = req.users.filter(|u| !u.is_empty()).map(|u| u.into_iter().map(|n| n.name.to_string()).collect());
    let mut duplicates = HashSet::new();
    if let Some(list) = &names {
        let mut seen = HashSet::new();
        for n in list {
            if !seen.insert(n) {
                duplicates.insert(n.clone());
            }
        }
    }
    let unique: Option<Vec<String>> = names.as_ref().map(|l| {
        let mut seen = HashSet::new();
        l.iter().filter(|n| seen.insert(n.as_str()) && !duplicates.contains(*n)).cloned().collect()
    });
    let described = match b.credentials.describe(unique.as_deref()).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "DescribeUserScramCredentials: the MetaStore did not answer");
            return resp.with_error_code(ResponseError::UnknownServerError.code());
        }
    };
    let mut results: Vec<DescribeUserScramCredentialsResult> = described
        .into_iter()
        .map(|(user, creds)| {
            let r = DescribeUserScramCredentialsResult::default().with_user(s(user));
            if creds.is_empty() {
                return r
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(s("Attempt to describe a user credential that does not exist")));
            }
            r.with_credential_infos(
                creds
                    .into_iter()
                    .map(|(m, i)| CredentialInfo::default().with_mechanism(m.kafka_type()).with_iterations(i as i32))
                    .collect(),
            )
        })
        .collect();
    for d in duplicates {
        results.push(
            DescribeUserScramCredentialsResult::default()
                .with_user(s(d))
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(Some(s("Cannot describe SCRAM credentials for the same user twice in a single request"))),
        );
    }
    resp.with_results(results)
}
