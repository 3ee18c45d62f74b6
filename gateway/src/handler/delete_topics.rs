//! DeleteTopics: by name (and by topic id from v6). Deleting a topic deletes its logs.

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::s;
use crate::broker::Broker;
use crate::security::acl::{op, Access};

pub async fn handle(b: Arc<Broker>, v: i16, req: DeleteTopicsRequest, access: Access) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if v >= 6 {
        req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut out = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| b.topic_by_id(id).map(|t| t.meta.name.clone()));
        let mut r = DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(s(n))));
        if v >= 6 {
            r.topic_id = b.topic(name.as_deref().unwrap_or_default()).map(|t| t.meta.id).unwrap_or(id);
        }
        let res = match &name {
            Some(n) if !access.topic(op::DELETE, n) => Err((ResponseError::TopicAuthorizationFailed, "Authorization failed.".to_string())),
            Some(n) => b.delete_topic(n).await,
            None => Err((ResponseError::UnknownTopicId, "unknown topic id".to_string())),
        };
        if let Err((e, msg)) = res {
            r.error_code = e.code();
            if v >= 5 {
                r.error_message = Some(s(msg));
            }
        }
        out.push(r);
    }
    DeleteTopicsResponse::default().with_responses(out)
}
