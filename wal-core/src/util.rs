//! Small helpers every module of both crates uses: a poison-tolerant mutex lock, wall-clock
//! milliseconds, and random non-zero ids (incarnations, sessions).

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks `m`, ignoring poisoning: the data behind our mutexes stays consistent across a panic
/// (every critical section is a few assignments), and a panic is already reported where it
/// happened.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random non-zero 64-bit id (zero means "none" wherever such ids are stored).
pub fn random_nonzero_id() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}
