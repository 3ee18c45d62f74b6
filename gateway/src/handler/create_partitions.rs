//! CreatePartitions: grows a topic's partition count (never shrinks it).

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::s;
use crate::broker::Broker;

pub async fn handle(b: Arc<Broker>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Err((e, msg)) = b.create_partitions(&t.name.0, t.count, req.validate_only).await {
            r.error_code = e.code();
            r.error_message = Some(s(msg));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}
