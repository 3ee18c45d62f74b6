//! Admin answers that must hold the moment they are sent (one gateway, in process): after
//! CreatePartitions, a ListOffsets pipelined right behind it on the same connection is served by
//! the new partitions, as Kafka serves them once CreatePartitions answers.

mod common;

use std::io::Write;

use common::*;
use kafka_protocol::messages::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_right_after_create_partitions_is_served() {
    let (running, _dir) = start_local(|_| {}).await;
    running.broker.create_topic("grow", 1, Default::default(), false).await.unwrap();
    let addr = running.addr;
    tokio::task::spawn_blocking(move || {
        for count in [4, 16] {
            let grow = CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default().with_name(name("grow")).with_count(count)]);
            let partitions =
                (1..count).map(|i| list_offsets_request::ListOffsetsPartition::default().with_partition_index(i).with_timestamp(-1));
            let list = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default().with_name(name("grow")).with_partitions(partitions.collect()),
            ]);
            // both in one write: the second is read while the first is handled
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut bytes = frame(ApiKey::CreatePartitions, 3, 1, &RequestKind::CreatePartitions(grow));
            bytes.extend(frame(ApiKey::ListOffsets, 7, 2, &RequestKind::ListOffsets(list)));
            s.write_all(&bytes).unwrap();
            let (_, ResponseKind::CreatePartitions(r)) = read_response_of(&mut s, ApiKey::CreatePartitions, 3) else { panic!() };
            assert_eq!(r.results[0].error_code, 0);
            let (_, ResponseKind::ListOffsets(r)) = read_response_of(&mut s, ApiKey::ListOffsets, 7) else { panic!() };
            let answers: Vec<(i32, i16, i64)> =
                r.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code, p.offset)).collect();
            assert_eq!(answers, (1..count).map(|i| (i, 0, 0)).collect::<Vec<_>>(), "grown to {count}");
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
}
