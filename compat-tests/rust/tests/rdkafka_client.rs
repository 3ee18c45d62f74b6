//! The rdkafka crate (librdkafka) against the gateway: idempotent acks=all production with every
//! compression codec, assign-and-consume with byte-for-byte checks of keys, values, headers and
//! offsets, watermarks, and a crash-restart in the middle.

use std::time::Duration;

use compat_rdkafka::{gateway_bin, Gateway};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn producer(bootstrap: &str, compression: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", compression)
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// A consumed record: offset, key, value and headers.
type Consumed = (i64, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn consume_all(bootstrap: &str, topic: &str, partition: i32, n: usize) -> Vec<Consumed> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
                .unwrap_or_default();
            out.push((m.offset(), m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

fn value(i: usize) -> Vec<u8> {
    (0..(i % 2000 + 1)).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_byte_for_byte() {
    let gw = Gateway::start(gateway_bin(false), None).unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &gw.bootstrap).create().unwrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("rd-{codec}");
        let r = admin.create_topics(&[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
        assert!(r[0].is_ok(), "{r:?}");
        let p = producer(&gw.bootstrap, codec);
        let mut acked = Vec::new();
        let mut futs = Vec::new();
        for i in 0..300usize {
            let key = format!("k{i}");
            let headers = OwnedHeaders::new().insert(Header { key: "h", value: Some(&i.to_be_bytes()) });
            let v = value(i);
            let fut =
                p.send_result(FutureRecord::to(&topic).partition(1).key(&key).payload(&v).headers(headers)).map_err(|(e, _)| e).unwrap();
            futs.push(fut);
        }
        for f in futs {
            let d = f.await.expect("not canceled").map_err(|(e, _)| e).expect("delivered");
            assert_eq!(d.partition, 1);
            acked.push(d.offset);
        }
        assert_eq!(acked, (0..300).collect::<Vec<i64>>(), "{codec}: offsets dense and in order");
        let got = consume_all(&gw.bootstrap, &topic, 1, 300);
        assert_eq!(got.len(), 300, "{codec}");
        for (i, (off, k, v, h)) in got.iter().enumerate() {
            assert_eq!(*off, i as i64);
            assert_eq!(k, format!("k{i}").as_bytes());
            assert_eq!(v, &value(i), "{codec}: value {i}");
            assert_eq!(h, &vec![("h".to_string(), i.to_be_bytes().to_vec())]);
        }
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &gw.bootstrap).create().unwrap();
        assert_eq!(c.fetch_watermarks(&topic, 1, Duration::from_secs(10)).unwrap(), (0, 300));
        assert_eq!(c.fetch_watermarks(&topic, 0, Duration::from_secs(10)).unwrap(), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_gateway_crash() {
    let mut gw = Gateway::start(gateway_bin(false), None).unwrap();
    let topic = "rd-crash";
    let p = producer(&gw.bootstrap, "lz4");
    let mut acked = Vec::new();
    for i in 0..500usize {
        let v = value(i);
        let d = p.send(FutureRecord::<(), _>::to(topic).partition(0).payload(&v), Duration::from_secs(30)).await.unwrap();
        acked.push((d.offset, v));
    }
    drop(p);
    gw.crash_and_restart().unwrap();
    let p = producer(&gw.bootstrap, "lz4");
    for i in 500..700usize {
        let v = value(i);
        let d = p.send(FutureRecord::<(), _>::to(topic).partition(0).payload(&v), Duration::from_secs(30)).await.unwrap();
        acked.push((d.offset, v));
    }
    let got = consume_all(&gw.bootstrap, topic, 0, 700);
    assert_eq!(got.len(), 700);
    for ((off, v), (goff, _, gv, _)) in acked.iter().zip(&got) {
        assert_eq!(off, goff);
        assert_eq!(v, gv);
    }
    gw.stop();
}
