//! DescribeCluster: this gateway is the whole cluster (until the cluster issue).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterResponse};

use super::s;
use crate::broker::Broker;

pub fn handle(b: Arc<Broker>) -> DescribeClusterResponse {
    let (host, port) = b.cfg.advertised();
    DescribeClusterResponse::default()
        .with_cluster_id(s(b.cfg.cluster_id.clone()))
        .with_controller_id(BrokerId(b.cfg.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(b.cfg.node_id))
            .with_host(s(host))
            .with_port(port)
            .with_rack(b.cfg.rack.clone().map(s))])
}
