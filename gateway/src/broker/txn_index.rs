//! A partition's transactions, as its leader tracks them: the open transaction of each
//! transactional producer (from its first batch in the partition to its marker) and the
//! aborted ones (first offset to marker offset). The last stable offset (LSO) is the high
//! watermark capped by the first offset of any open transaction; read_committed Fetch answers
//! the aborted transactions its range overlaps from here, without scanning data. Kept in the
//! producer-state snapshot and rebuilt by replaying the batches after it.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnIndex {
    /// Producer id -> the first offset of its open transaction here.
    open: HashMap<i64, u64>,
    /// Marker offset -> (producer id, first offset) of an aborted transaction.
    aborted: BTreeMap<u64, (i64, u64)>,
}

impl TxnIndex {
    /// A transactional batch of `pid` at `offset`: opens its transaction here if none is open.
    pub fn on_data(&mut self, pid: i64, offset: u64) {
        self.open.entry(pid).or_insert(offset);
    }

    /// The marker of `pid`'s transaction at `offset` (commit or abort) closes it.
    pub fn on_marker(&mut self, pid: i64, commit: bool, offset: u64) {
        if let Some(first) = self.open.remove(&pid) {
            if !commit {
                self.aborted.insert(offset, (pid, first));
            }
        }
    }

    /// Whether `pid` has a transaction open here.
    pub fn is_open(&self, pid: i64) -> bool {
        self.open.contains_key(&pid)
    }

    /// The last stable offset given the high watermark.
    pub fn lso(&self, hw: u64) -> u64 {
        self.open.values().copied().min().unwrap_or(hw).min(hw)
    }

    /// Aborted transactions overlapping offsets `[from, to)`: (producer id, first offset).
    pub fn aborted_in(&self, from: u64, to: u64) -> Vec<(i64, u64)> {
        self.aborted.range(from..).map(|(_, v)| *v).filter(|(_, first)| *first < to).collect()
    }

    /// Every aborted transaction: (producer id, first offset, marker offset).
    pub fn aborted_ranges(&self) -> Vec<(i64, u64, u64)> {
        self.aborted.iter().map(|(last, (pid, first))| (*pid, *first, *last)).collect()
    }

    /// Forgets what lies at or after `offset` (appends that failed and will be reused):
    /// transactions opened there are no longer open, markers there never happened.
    pub fn rollback_from(&mut self, offset: u64) {
        self.open.retain(|_, first| *first < offset);
        let undone: Vec<(i64, u64)> = self.aborted.split_off(&offset).into_values().collect();
        for (pid, first) in undone {
            if first < offset {
                self.open.insert(pid, first);
            }
        }
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn forget_below(&mut self, start: u64) {
        self.aborted = self.aborted.split_off(&start);
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lso_aborted_ranges_and_rollback() {
        let mut t = TxnIndex::default();
        assert_eq!(t.lso(10), 10);
        t.on_data(1, 10);
        t.on_data(1, 12); // (the same transaction)
        t.on_data(2, 11);
        assert_eq!(t.lso(20), 10);
        t.on_marker(1, false, 15);
        assert_eq!(t.lso(20), 11, "producer 2 is still open");
        t.on_marker(2, true, 16);
        assert_eq!(t.lso(20), 20);
        assert_eq!(t.aborted_in(0, 100), vec![(1, 10)]);
        assert_eq!(t.aborted_in(16, 100), vec![], "the marker is below the range");
        assert_eq!(t.aborted_in(0, 10), vec![], "the transaction starts at the range's end");
        assert_eq!(t.aborted_in(12, 13), vec![(1, 10)]);
        // the abort marker's append failed: the transaction is open again
        t.rollback_from(15);
        assert!(t.is_open(1) && t.aborted_in(0, 100).is_empty());
        t.on_data(3, 30);
        t.rollback_from(30);
        assert!(!t.is_open(3));
        t.on_marker(1, false, 40);
        t.forget_below(41);
        assert!(t.aborted_in(0, 100).is_empty());
    }
}
