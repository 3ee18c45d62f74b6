//! Sealing: writing a segment's index object and marking it sealed in metadata, both for the
//! writer's own segments when they roll and for the active segment a previous (crashed or
//! fenced) writer left behind. A left-behind segment is sealed at its durable `end_offset`, never
//! beyond: blocks stored after the last commit are orphans and are ignored.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{decode_json, keys, ChunkRef, Layout, SegmentMeta, SegmentState};
use crate::error::{Result, StorageError, WalError};
use crate::format::{decode_block_header, decode_index, encode_index, BlockInfo, SegmentIndex, BLOCK_HEADER_LEN};
use crate::meta::MetaStore;
use crate::storage::ObjectStore;

/// Lists a segment's stored blocks and returns the chain that covers `[base, end)` of its
/// metadata. Timestamps are unknown (`i64::MAX`) unless `with_timestamps` reads each header.
pub(crate) async fn discover_blocks(
    store: &dyn ObjectStore,
    log_id: u64,
    seg: &SegmentMeta,
    with_timestamps: bool,
) -> Result<Vec<BlockInfo>> {
    let listed = store.list(&keys::segment_objects(log_id, seg.id, seg.epoch)).await?;
    let found: Vec<(u64, u64, u64, String)> = listed
        .into_iter()
        .filter_map(|o| keys::parse_block(&o.key).map(|(b, e)| (b, e, o.size, o.key)))
        .filter(|(b, e, _, _)| *e <= seg.end_offset && *b >= seg.base_offset && e > b)
        .collect();
    // LogStore replicas may store overlapping runs (one merged run, another replica's single
    // blocks): find a chain from base to end, preferring the longest runs (fewest GETs).
    let mut by_base: BTreeMap<u64, Vec<(u64, u64, String)>> = BTreeMap::new();
    for (b, e, size, key) in found {
        by_base.entry(b).or_default().push((e, size, key));
    }
    for v in by_base.values_mut() {
        v.sort_by_key(|r| std::cmp::Reverse(r.0));
    }
    let path = chain_to(&by_base, seg.base_offset, seg.end_offset);
    let expect = path.as_ref().map(|_| seg.end_offset).unwrap_or(seg.base_offset);
    let chain: Vec<(BlockInfo, String)> = path
        .unwrap_or_default()
        .into_iter()
        .map(|(b, e, size, key)| (BlockInfo { base_offset: b, end_offset: e, max_timestamp: i64::MAX, size: size as u32 }, key))
        .collect();
    if expect != seg.end_offset {
        return Err(WalError::Format {
            key: keys::segment_objects(log_id, seg.id, seg.epoch),
            source: crate::error::FormatError::Inconsistent(format!(
                "stored blocks reach offset {expect}, metadata says {} is durable",
                seg.end_offset
            )),
        });
    }
    if !with_timestamps {
        return Ok(chain.into_iter().map(|(b, _)| b).collect());
    }
    stream::iter(chain)
        .map(|(mut info, key)| async move {
            let head = store.get_range(&key, 0..BLOCK_HEADER_LEN as u64).await?;
            let h = decode_block_header(&head).map_err(|source| WalError::Format { key: key.clone(), source })?;
            if h.base_offset != info.base_offset || h.end_offset != info.end_offset {
                return Err(WalError::Format {
                    key,
                    source: crate::error::FormatError::Inconsistent("block header disagrees with its key".into()),
                });
            }
            info.max_timestamp = h.max_timestamp;
            Ok::<_, WalError>(info)
        })
        .buffered(8)
        .try_collect()
        .await
}

/// A chain of stored runs `(base, end, size, key)` from `from` to exactly `to`, trying longer
/// runs first (depth first, each offset visited once).
fn chain_to(by_base: &BTreeMap<u64, Vec<(u64, u64, String)>>, from: u64, to: u64) -> Option<Vec<(u64, u64, u64, String)>> {
    let mut dead: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut path: Vec<(u64, u64, u64, String)> = Vec::new();
    // (offset, index of the next candidate to try there)
    let mut stack: Vec<(u64, usize)> = vec![(from, 0)];
    while let Some((pos, i)) = stack.pop() {
        if pos == to {
            return Some(path);
        }
        let next = by_base.get(&pos).and_then(|c| c.iter().enumerate().skip(i).find(|(_, (e, _, _))| *e <= to && !dead.contains(e)));
        match next {
            Some((j, (e, size, key))) => {
                stack.push((pos, j + 1));
                path.push((pos, *e, *size, key.clone()));
                stack.push((*e, 0));
            }
            None => {
                dead.insert(pos);
                if !stack.is_empty() {
                    path.pop();
                }
            }
        }
    }
    None
}

/// Stores the index of a segment (idempotently) and returns the segment's sealed metadata.
pub(crate) async fn write_index(store: &dyn ObjectStore, log_id: u64, seg: &SegmentMeta, blocks: &[BlockInfo]) -> Result<SegmentMeta> {
    let idx = SegmentIndex {
        log_id,
        segment: seg.id,
        epoch: seg.epoch,
        base_offset: seg.base_offset,
        end_offset: seg.end_offset,
        blocks: blocks.to_vec(),
    };
    let key = seg.index_key(log_id);
    let data = encode_index(&idx);
    let mut attempt = 0;
    loop {
        match store.put_if_absent(&key, data.clone()).await {
            Ok(()) => break,
            Err(StorageError::AlreadyExists(_)) => {
                // A previous attempt (ours, or a sealer that crashed) stored it: it must describe
                // exactly the same durable range.
                let existing = store.get(&key).await?;
                let other = decode_index(&existing).map_err(|source| WalError::Format { key: key.clone(), source })?;
                if other.end_offset != idx.end_offset || other.blocks.len() != idx.blocks.len() {
                    return Err(WalError::Format {
                        key,
                        source: crate::error::FormatError::Inconsistent("an index with another range exists".into()),
                    });
                }
                break;
            }
            Err(e) if e.is_retriable() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sealed_meta(seg, blocks))
}

/// Seals a segment: its index object, or (blocks in shared objects) nothing yet: segment
/// flushing writes the segment's data and index objects later.
pub(crate) async fn seal_segment(store: &dyn ObjectStore, log_id: u64, seg: &SegmentMeta, blocks: &[BlockInfo]) -> Result<SegmentMeta> {
    match seg.layout {
        Layout::Chunks => Ok(sealed_meta(seg, blocks)),
        Layout::Blocks | Layout::Flushed => write_index(store, log_id, seg, blocks).await,
    }
}

/// The sealed record of a segment with these blocks.
fn sealed_meta(seg: &SegmentMeta, blocks: &[BlockInfo]) -> SegmentMeta {
    metrics::counter!(crate::metrics::SEGMENTS_SEALED_TOTAL).increment(1);
    SegmentMeta {
        state: SegmentState::Sealed,
        blocks: blocks.len() as u32,
        bytes: blocks.iter().map(|b| b.size as u64).sum(),
        // i64::MAX marks a block whose timestamps were not read (see `seal_abandoned`); the
        // segment's own maximum, committed with every block, is authoritative anyway.
        max_timestamp: blocks.iter().map(|b| b.max_timestamp).filter(|t| *t != i64::MAX).max().unwrap_or(-1).max(seg.max_timestamp),
        ..seg.clone()
    }
}

/// The blocks of a segment whose blocks are in shared objects, from their metadata keys: the
/// chain from the segment's base to its durable end (each key was committed with the segment
/// record that covers it, so the chain is whole). `legacy`: the log's name, to read records
/// written before they were keyed by log id when there are none by id.
pub(crate) async fn load_chunks(meta: &dyn MetaStore, log_id: u64, legacy: Option<&str>, seg: &SegmentMeta) -> Result<Vec<ChunkRef>> {
    let mut listing = meta.list(&keys::chunks(log_id, seg.id)).await?;
    if let (true, Some(name)) = (listing.kvs.is_empty(), legacy) {
        listing = meta.list(&keys::legacy_chunks(name, seg.id)).await?;
    }
    let mut refs: Vec<ChunkRef> = listing.kvs.iter().map(|kv| decode_json(&kv.key, &kv.value)).collect::<Result<_>>()?;
    refs.sort_by_key(|r| r.base_offset);
    let mut chain = Vec::with_capacity(refs.len());
    let mut expect = seg.base_offset;
    for r in refs {
        if r.base_offset == expect && r.end_offset <= seg.end_offset {
            expect = r.end_offset;
            chain.push(r);
        }
    }
    if expect != seg.end_offset {
        return Err(WalError::Format {
            key: keys::chunks(log_id, seg.id),
            source: crate::error::FormatError::Inconsistent(format!(
                "chunk records reach offset {expect}, metadata says {} is durable",
                seg.end_offset
            )),
        });
    }
    Ok(chain)
}

/// A chunk's block as a block list records it.
pub(crate) fn chunk_info(r: &ChunkRef) -> BlockInfo {
    BlockInfo { base_offset: r.base_offset, end_offset: r.end_offset, max_timestamp: r.max_timestamp, size: r.loc.len }
}

/// Seals a segment left active by a previous writer, from what its metadata says is durable.
/// Block headers are read for their timestamps only when there are few blocks; otherwise the
/// index records them as unknown (readers then open those blocks for timestamp lookups), so a
/// writer's start-up costs one LIST, not one GET per block.
pub(crate) async fn seal_abandoned(store: &dyn ObjectStore, log_id: u64, seg: &SegmentMeta) -> Result<(SegmentMeta, Vec<BlockInfo>)> {
    const READ_HEADERS_UP_TO: u32 = 64;
    let blocks = discover_blocks(store, log_id, seg, seg.blocks <= READ_HEADERS_UP_TO).await?;
    let sealed = write_index(store, log_id, seg, &blocks).await?;
    Ok((sealed, blocks))
}

/// Loads a sealed segment's block list from its index object.
pub(crate) async fn load_index(store: &dyn ObjectStore, log_id: u64, seg: &SegmentMeta) -> Result<Vec<BlockInfo>> {
    let key = seg.index_key(log_id);
    let data: Bytes = store.get(&key).await?;
    let idx = decode_index(&data).map_err(|source| WalError::Format { key: key.clone(), source })?;
    if idx.base_offset != seg.base_offset || idx.end_offset != seg.end_offset {
        return Err(WalError::Format {
            key,
            source: crate::error::FormatError::Inconsistent("index range disagrees with metadata".into()),
        });
    }
    Ok(idx.blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[(u64, u64)]) -> BTreeMap<u64, Vec<(u64, u64, String)>> {
        let mut m: BTreeMap<u64, Vec<(u64, u64, String)>> = BTreeMap::new();
        for (b, e) in v {
            m.entry(*b).or_default().push((*e, 1, format!("{b}-{e}")));
        }
        for c in m.values_mut() {
            c.sort_by_key(|r| std::cmp::Reverse(r.0));
        }
        m
    }

    fn ends(p: Option<Vec<(u64, u64, u64, String)>>) -> Option<Vec<(u64, u64)>> {
        p.map(|v| v.into_iter().map(|(b, e, _, _)| (b, e)).collect())
    }

    #[test]
    fn a_chain_prefers_long_runs_and_backs_out_of_dead_ends() {
        // A merged run and the same blocks one by one: the merged run is taken.
        assert_eq!(ends(chain_to(&runs(&[(0, 10), (10, 20), (0, 20)]), 0, 20)), Some(vec![(0, 20)]));
        // The long run leads nowhere (nothing stored after 100); the short ones reach the end.
        assert_eq!(ends(chain_to(&runs(&[(0, 100), (0, 30), (30, 60)]), 0, 60)), Some(vec![(0, 30), (30, 60)]));
        assert_eq!(ends(chain_to(&runs(&[(0, 100), (0, 30), (30, 60), (60, 150)]), 0, 150)), Some(vec![(0, 30), (30, 60), (60, 150)]));
        // A hole: no chain.
        assert_eq!(ends(chain_to(&runs(&[(0, 10), (20, 30)]), 0, 30)), None);
        // An empty range needs nothing.
        assert_eq!(ends(chain_to(&runs(&[]), 5, 5)), Some(vec![]));
    }
}
