//! Answering appends: the one place an append's acknowledgement or failure is sent.
//!
//! Acknowledgements go out in offset order (callers pass blocks in order, after `durable` was
//! advanced past them). A failure answers every pending append behind it too: with `stop`, the
//! writer accepts nothing more; otherwise `written` resets to `durable` and appends continue.

use std::collections::VecDeque;

use super::{InFlight, Pending, WriterInner};
use crate::entry::AppendAck;
use crate::error::SharedFailure;
use crate::metrics as m;
use crate::util::lock;

/// Acknowledges the appends of durable blocks, in order.
pub(super) fn acknowledge<'a>(entries: impl Iterator<Item = &'a mut Pending>) {
    for p in entries {
        metrics::histogram!(m::ACK_SECONDS).record(p.at.elapsed().as_secs_f64());
        if let Some(a) = p.ack.take() {
            let _ = a.send(Ok(AppendAck { base_offset: p.entry.offset, end_offset: p.entry.end_offset() }));
        }
    }
}

/// Bytes the blocks' appends hold in the buffer bound.
pub(super) fn held_bytes(blocks: &[InFlight]) -> usize {
    blocks.iter().flat_map(|b| b.entries.iter()).map(|p| p.entry.data.len()).sum()
}

impl WriterInner {
    /// MemoryBuffer: the blocks are committed: acknowledge them and free their buffer space.
    pub(super) fn release(&self, mut done: Vec<InFlight>) {
        acknowledge(done.iter_mut().flat_map(|b| b.entries.iter_mut()));
        metrics::gauge!(m::BUFFER_BYTES).decrement(held_bytes(&done) as f64);
    }

    /// Fails every pending append: those of `pipeline` and everything buffered.
    pub(super) fn fail_all(&self, f: SharedFailure, pipeline: &mut VecDeque<InFlight>, stop: bool) {
        let mut failed: Vec<Pending> = Vec::new();
        metrics::gauge!(m::BUFFER_BYTES).decrement(held_bytes(pipeline.make_contiguous()) as f64);
        for b in pipeline.drain(..) {
            b.task.abort();
            failed.extend(b.entries);
        }
        {
            let mut st = lock(&self.state);
            failed.extend(st.buffer.drain(..));
            metrics::gauge!(m::BUFFER_BYTES).decrement(st.buffer_bytes as f64);
            st.buffer_bytes = 0;
            st.resets += 1;
            st.flush_requested = false;
            if stop {
                st.failure = Some(f.clone());
            } else {
                // Everything after the durable end failed: offsets continue from there.
                st.next_offset = self.shared.durable_end();
            }
        }
        metrics::counter!(m::APPEND_ERRORS_TOTAL).increment(failed.len() as u64);
        for p in failed {
            if let Some(a) = p.ack {
                let _ = a.send(Err(f.to_error()));
            }
        }
    }
}
