//! Client quotas as Kafka has them: per user, per client id, or per both (each may be the
//! `<default>` entity, written as a null name), the keys `producer_byte_rate`,
//! `consumer_byte_rate` and `request_percentage`. A request's principal and client id select
//! the most specific entity that has the key (Kafka's precedence: user+client, user+default
//! client, user, default user+client, default user+default client, default user, client,
//! default client); that entity, with the concrete names filled in, owns one rate sensor.
//!
//! A sensor keeps byte counts in one-second windows over the last `quota_window_num` seconds;
//! when the measured rate is above the quota, the answer carries `throttle_time_ms` =
//! (rate − quota) / quota × the measured span, and the connection reads nothing more for that
//! long (Kafka's channel muting, KIP-219): one tenant cannot take another's bandwidth.
//! `request_percentage` is stored and described; it is not enforced yet.
//!
//! Quotas live in the MetaStore (`gw/quota/{entity}`), re-read with the ACLs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wal_core::meta::{MetaStore, Op, Txn};
use wal_core::util::lock;
use wal_core::MetaError;

pub const PREFIX: &str = "gw/quota/";
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const KEYS: &[&str] = &[PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// A quota entity: `Some(None)` is the default of that type, `None` leaves the type out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    #[serde(with = "part")]
    pub user: Option<Option<String>>,
    #[serde(with = "part")]
    pub client_id: Option<Option<String>>,
}

/// Stores an entity part as `[]` (absent), `[null]` (the default) or `["name"]`, so the default
/// and absence stay apart (both would be `null` as plain options).
mod part {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        v.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Ok(Vec::<Option<String>>::deserialize(d)?.into_iter().next())
    }
}

impl Entity {
    fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("entity serializes");
        format!("{PREFIX}{}", json.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// How many one-second windows a sensor keeps (Kafka's `quota.window.num`).
const WINDOWS: usize = 11;

#[derive(Debug)]
struct Sensor {
    /// (window start, bytes) for the last WINDOWS seconds.
    windows: Vec<(Instant, f64)>,
    created: Instant,
}

impl Sensor {
    fn new(now: Instant) -> Sensor {
        Sensor { windows: Vec::with_capacity(WINDOWS), created: now }
    }

    /// Adds `bytes` and returns the rate over the kept windows (bytes per second).
    fn record(&mut self, bytes: f64, now: Instant) -> (f64, Duration) {
        self.windows.retain(|(start, _)| now.duration_since(*start) < Duration::from_secs(WINDOWS as u64));
        match self.windows.last_mut() {
            Some((start, b)) if now.duration_since(*start) < Duration::from_secs(1) => *b += bytes,
            _ => self.windows.push((now, bytes)),
        }
        let first = self.windows.first().map(|(s, _)| *s).unwrap_or(now);
        // A young sensor measures over at least one second, as Kafka's rate does over its
        // configured window: a first burst is not an infinite rate.
        let span = now.duration_since(first.min(self.created)).max(Duration::from_secs(1)).min(Duration::from_secs(WINDOWS as u64));
        let total: f64 = self.windows.iter().map(|(_, b)| b).sum();
        (total / span.as_secs_f64(), span)
    }
}

pub struct Quotas {
    meta: Arc<dyn MetaStore>,
    entries: RwLock<Arc<BTreeMap<Entity, BTreeMap<String, f64>>>>,
    sensors: Mutex<HashMap<(String, String, String), Sensor>>,
}

/// Largest throttle Kafka applies: the whole quota window.
const MAX_THROTTLE: Duration = Duration::from_secs(WINDOWS as u64);

impl Quotas {
    pub fn new(meta: Arc<dyn MetaStore>) -> Quotas {
        Quotas { meta, entries: RwLock::new(Arc::default()), sensors: Mutex::new(HashMap::new()) }
    }

    pub fn entries(&self) -> Arc<BTreeMap<Entity, BTreeMap<String, f64>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn refresh(&self) -> Result<(), MetaError> {
        let listing = self.meta.list(PREFIX).await?;
        let map = listing.kvs.iter().filter_map(|kv| serde_json::from_slice::<(Entity, BTreeMap<String, f64>)>(&kv.value).ok()).collect();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// Sets (Some) or removes (None) quota keys of one entity.
    pub async fn alter(&self, entity: &Entity, ops: &[(String, Option<f64>)]) -> Result<(), MetaError> {
        self.refresh().await?;
        let mut values = self.entries().get(entity).cloned().unwrap_or_default();
        for (k, v) in ops {
            match v {
                Some(v) => values.insert(k.clone(), *v),
                None => values.remove(k),
            };
        }
        let op = if values.is_empty() {
            Op::Delete(entity.key())
        } else {
            Op::put(entity.key(), serde_json::to_vec(&(entity, &values)).expect("quota serializes"))
        };
        self.meta.txn(Txn::new().then(op)).await?;
        self.refresh().await
    }

    /// The quota `key` for this user and client id, and the entity that sets it (with the
    /// concrete names the sensor is kept for).
    pub fn lookup(&self, key: &str, user: &str, client_id: &str) -> Option<(f64, (String, String))> {
        let entries = self.entries();
        if entries.is_empty() {
            return None;
        }
        let (u, c) = (Some(Some(user.to_string())), Some(Some(client_id.to_string())));
        let candidates = [
            (u.clone(), c.clone()),
            (u.clone(), Some(None)),
            (u.clone(), None),
            (Some(None), c.clone()),
            (Some(None), Some(None)),
            (Some(None), None),
            (None, c.clone()),
            (None, Some(None)),
        ];
        for (user_part, client_part) in candidates {
            let e = Entity { user: user_part.clone(), client_id: client_part.clone() };
            if let Some(v) = entries.get(&e).and_then(|vals| vals.get(key)) {
                let sensor_user = if user_part.is_some() { user.to_string() } else { String::new() };
                let sensor_client = if client_part.is_some() { client_id.to_string() } else { String::new() };
                return Some((*v, (sensor_user, sensor_client)));
            }
        }
        None
    }

    /// Records `bytes` of traffic of kind `key`; returns how long to throttle.
    pub fn record(&self, key: &str, user: &str, client_id: &str, bytes: usize) -> Duration {
        let Some((quota, (su, sc))) = self.lookup(key, user, client_id) else { return Duration::ZERO };
        let now = Instant::now();
        let mut sensors = lock(&self.sensors);
        let sensor = sensors.entry((key.to_string(), su, sc)).or_insert_with(|| Sensor::new(now));
        let (rate, span) = sensor.record(bytes as f64, now);
        if quota <= 0.0 || rate <= quota {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((rate - quota) / quota * span.as_secs_f64()).min(MAX_THROTTLE.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Quotas {
        Quotas::new(Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory()))
    }

    #[tokio::test]
    async fn the_most_specific_entity_sets_the_quota() {
        let q = quotas();
        let user = |u: &str| Entity { user: Some(Some(u.into())), client_id: None };
        q.alter(&Entity { user: Some(None), client_id: None }, &[(PRODUCER_BYTE_RATE.into(), Some(1000.0))]).await.unwrap();
        q.alter(&user("alice"), &[(PRODUCER_BYTE_RATE.into(), Some(5000.0))]).await.unwrap();
        q.alter(
            &Entity { user: Some(Some("alice".into())), client_id: Some(Some("batch".into())) },
            &[(PRODUCER_BYTE_RATE.into(), Some(100.0))],
        )
        .await
        .unwrap();
        q.alter(&Entity { user: None, client_id: Some(Some("tool".into())) }, &[(CONSUMER_BYTE_RATE.into(), Some(7.0))]).await.unwrap();
        assert_eq!(q.lookup(PRODUCER_BYTE_RATE, "User:alice", "batch").unwrap().0, 1000.0, "entities name users without User:");
        assert_eq!(q.lookup(PRODUCER_BYTE_RATE, "alice", "batch").unwrap().0, 100.0);
        assert_eq!(q.lookup(PRODUCER_BYTE_RATE, "alice", "web").unwrap().0, 5000.0);
        assert_eq!(q.lookup(PRODUCER_BYTE_RATE, "bob", "web").unwrap(), (1000.0, ("bob".into(), String::new())));
        assert_eq!(q.lookup(CONSUMER_BYTE_RATE, "bob", "tool").unwrap(), (7.0, (String::new(), "tool".into())));
        assert_eq!(q.lookup(CONSUMER_BYTE_RATE, "bob", "web"), None);
        q.alter(&user("alice"), &[(PRODUCER_BYTE_RATE.into(), None)]).await.unwrap();
        assert_eq!(q.lookup(PRODUCER_BYTE_RATE, "alice", "web").unwrap().0, 1000.0, "removed: the default user's");
        let other = Quotas::new(q.meta.clone());
        other.refresh().await.unwrap();
        assert_eq!(other.entries().len(), q.entries().len(), "another gateway reads the same quotas");
    }

    #[tokio::test]
    async fn traffic_above_the_rate_is_throttled_in_proportion() {
        let q = quotas();
        q.alter(&Entity { user: Some(Some("u".into())), client_id: None }, &[(PRODUCER_BYTE_RATE.into(), Some(1000.0))]).await.unwrap();
        assert_eq!(q.record(PRODUCER_BYTE_RATE, "u", "c", 500), Duration::ZERO, "within the rate");
        let t = q.record(PRODUCER_BYTE_RATE, "u", "c", 2500);
        // 3000 bytes over one second against 1000/s: twice over, for one second
        assert!(t >= Duration::from_millis(1900) && t <= Duration::from_millis(2100), "{t:?}");
        assert_eq!(q.record(PRODUCER_BYTE_RATE, "other", "c", 1 << 20), Duration::ZERO, "no quota for other");
        assert!(q.record(PRODUCER_BYTE_RATE, "u", "c", 1 << 30) <= MAX_THROTTLE);
    }
}
