//! DescribeCluster: every live gateway (and always this one) at its address on the client's listener; the one with the lowest node id is named controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterResponse};

use super::s;
use crate::broker::Broker;

pub fn handle(b: Arc<Broker>, listener: &str) -> DescribeClusterResponse {
    let advertised = b.cluster.advertised_on(listener);
    let controller = advertised.keys().next().copied().unwrap_or(b.cfg.node_id);
    DescribeClusterResponse::default().with_cluster_id(s(b.cfg.cluster_id.clone())).with_controller_id(BrokerId(controller)).with_brokers(
        advertised
            .values()
            .map(|m| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(m.node_id))
                    .with_host(s(m.host.clone()))
                    .with_port(m.port)
                    .with_rack(m.rack.clone().map(s))
            })
            .collect(),
    )
}
