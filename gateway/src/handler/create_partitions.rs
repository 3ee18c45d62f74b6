//! CreatePartitions: grows a topic's partition count (never shrinks it), and answers once the
//! new partitions are led by their owners (within the request's timeout, else
//! REQUEST_TIMED_OUT: the partitions exist and are taken over shortly).

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, req: CreatePartitionsRequest, access: Access) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let before = b.topic(&t.name.0).map(|t| t.meta.partitions).unwrap_or(0);
        let outcome = if !access.topic(op::ALTER, &t.name.0) {
            Err((ResponseError::TopicAuthorizationFailed, "Authorization failed.".to_string()))
        } else {
            match b.create_partitions(&t.name.0, t.count, req.validate_only).await {
                Ok(()) if !req.validate_only => served_within(&b, &t.name.0, before, req.timeout_ms).await,
                other => other,
            }
        };
        if let Err((e, msg)) = outcome {
            r.error_code = e.code();
            r.error_message = Some(s(msg));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// REQUEST_TIMED_OUT unless `name`'s partitions from `from` on are led within `timeout_ms`
/// (0: not waited for, as Kafka's zero timeout).
pub(super) async fn served_within(b: &Broker, name: &str, from: i32, timeout_ms: i32) -> Result<(), (ResponseError, String)> {
    if timeout_ms <= 0 || b.wait_served(name, from, std::time::Duration::from_millis(timeout_ms.min(60_000) as u64)).await {
        return Ok(());
    }
    Err((ResponseError::RequestTimedOut, format!("the partitions of {name} were created but are not led yet")))
}
