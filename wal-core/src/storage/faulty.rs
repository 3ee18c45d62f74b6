//! A fault-injecting decorator for tests: fails the next N calls, fails calls with a seeded
//! probability, or stores a put and then reports it as failed (the ambiguous outcome a lost
//! response produces on a real network).

use crate::util::lock;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{ObjectMeta, ObjectStore};
use crate::error::StorageError;

/// Which calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOps {
    All,
    Puts,
    Reads,
}

struct State {
    ops: FaultOps,
    fail_next: u64,
    lose_ack_next: u64,
    fail_probability: f64,
    lose_ack_probability: f64,
    rng: StdRng,
    injected: u64,
}

pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

enum Fault {
    None,
    Fail,
    LoseAck,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S, seed: u64) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(State {
                ops: FaultOps::All,
                fail_next: 0,
                lose_ack_next: 0,
                fail_probability: 0.0,
                lose_ack_probability: 0.0,
                rng: StdRng::seed_from_u64(seed),
                injected: 0,
            }),
        }
    }
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
    /// Restricts the faults to some calls.
    pub fn set_ops(&self, ops: FaultOps) {
        self.st().ops = ops;
    }
    /// Fails the next `n` matching calls with a transient error.
    pub fn fail_next(&self, n: u64) {
        self.st().fail_next = n;
    }
    /// Stores the next `n` puts but reports each as a transient failure.
    pub fn lose_ack_next(&self, n: u64) {
        self.st().lose_ack_next = n;
    }
    /// Fails each matching call with probability `p` (seeded, so runs reproduce).
    pub fn set_fail_probability(&self, p: f64) {
        self.st().fail_probability = p;
    }
    /// Stores each put, then reports failure, with probability `p`.
    pub fn set_lose_ack_probability(&self, p: f64) {
        self.st().lose_ack_probability = p;
    }
    /// Turns every fault off.
    pub fn heal(&self) {
        let mut s = self.st();
        s.fail_next = 0;
        s.lose_ack_next = 0;
        s.fail_probability = 0.0;
        s.lose_ack_probability = 0.0;
    }
    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.st().injected
    }
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn decide(&self, is_put: bool) -> Fault {
        let mut s = self.st();
        let applies = match s.ops {
            FaultOps::All => true,
            FaultOps::Puts => is_put,
            FaultOps::Reads => !is_put,
        };
        if !applies {
            return Fault::None;
        }
        let f = if s.fail_next > 0 {
            s.fail_next -= 1;
            Fault::Fail
        } else if is_put && s.lose_ack_next > 0 {
            s.lose_ack_next -= 1;
            Fault::LoseAck
        } else {
            let (pf, pl) = (s.fail_probability, s.lose_ack_probability);
            let x: f64 = s.rng.gen();
            if x < pf {
                Fault::Fail
            } else if is_put && x < pf + pl {
                Fault::LoseAck
            } else {
                Fault::None
            }
        };
        if !matches!(f, Fault::None) {
            s.injected += 1;
        }
        f
    }
}

fn injected(op: &'static str) -> StorageError {
    StorageError::Transient { op, message: "injected fault".into() }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        match self.decide(true) {
            Fault::Fail => Err(injected("put")),
            Fault::LoseAck => {
                self.inner.put_if_absent(key, data).await?;
                Err(injected("put"))
            }
            Fault::None => self.inner.put_if_absent(key, data).await,
        }
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        match self.decide(false) {
            Fault::None => self.inner.get(key).await,
            _ => Err(injected("get")),
        }
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        match self.decide(false) {
            Fault::None => self.inner.get_range(key, range).await,
            _ => Err(injected("get_range")),
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        match self.decide(false) {
            Fault::None => self.inner.list(prefix).await,
            _ => Err(injected("list")),
        }
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.decide(true) {
            Fault::None => self.inner.delete(key).await,
            _ => Err(injected("delete")),
        }
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
