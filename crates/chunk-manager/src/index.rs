//! The lookup index: an immutable snapshot of the visible chunks, published through `ArcSwap`
//! so lookups take no lock and send no message.
//!
//! Per dataset, chunks are sorted by `(start, id)`. Ranges of one dataset may overlap, so the
//! chunk with the greatest start at or below the block may end before it while an earlier,
//! longer chunk still covers it; a max-segment tree over the range ends finds the rightmost
//! covering chunk in O(log n). The common case, no overlap, is answered by the first probe.
//!
//! A chunk deleted after the snapshot was built is skipped through its `hidden` flag until the
//! reconciler publishes the next snapshot. `list_chunks` copies the snapshot's id array; when
//! chunks were hidden since the build, the table's [`Hides`] list names them, so the copy
//! skips their positions (found by binary search) instead of reading every resident: reading
//! 5,000 residents one pointer at a time was the call's tail latency under churn.
//!
//! A replaced snapshot is freed by whoever drops its last reference, which may be a lookup that
//! was reading it. Freeing thousands of entries (and releasing the deleted chunks they pin)
//! inside `list_chunks` or `find_chunk` made their tail latency; so a snapshot built with a
//! [`Retire`] sender hands its contents back to the reconciler on drop, in O(1), and the
//! reconciler frees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chunk::{ChunkId, DatasetId};
use crate::handle::Resident;
use crate::table::IndexKey;

/// The chunks hidden since the last snapshot the reconciler published, each with the
/// visible-set version its hide brought: written by the table under its lock, read by
/// `list_chunks` without one.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hides {
    /// Every hide after this version is listed.
    since: u64,
    /// `(version, key)`, in version order.
    hides: Vec<(u64, IndexKey)>,
}

impl Hides {
    /// Every hide after this version is listed.
    pub(crate) fn since(&self) -> u64 {
        self.since
    }

    /// This list and one more hide.
    pub(crate) fn with(&self, version: u64, key: IndexKey) -> Self {
        let mut next = self.clone();
        next.hides.push((version, key));
        next
    }

    /// This list without the hides a snapshot at `version` already reflects.
    pub(crate) fn published(&self, version: u64) -> Self {
        Self {
            since: version,
            hides: self
                .hides
                .iter()
                .filter(|(hidden_at, _)| *hidden_at > version)
                .copied()
                .collect(),
        }
    }
}

/// The contents of a dropped snapshot, on their way to the reconciler to be freed.
pub(crate) struct Retired {
    _keys: Vec<DatasetKey>,
    _datasets: Vec<DatasetIndex>,
}

/// Where dropped snapshots send their contents.
pub(crate) type Retire = mpsc::UnboundedSender<Retired>;

/// The visible chunks of every dataset.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// The datasets' ids as big-endian words, sorted: compared inline, without `memcmp`, in
    /// one small contiguous array.
    keys: Vec<DatasetKey>,
    /// `datasets[i]` holds the chunks of the dataset `keys[i]`.
    datasets: Vec<DatasetIndex>,
    /// Every chunk's id, in index order: `list_chunks` copies it when nothing was hidden since
    /// the build, without touching the residents.
    ids: Vec<ChunkId>,
    /// `offsets[i]`: the position in `ids` of the first chunk of `datasets[i]`.
    offsets: Vec<usize>,
    /// The visible set's version this snapshot shows.
    version: u64,
    /// Where the contents go when the snapshot is dropped (see the module docs).
    retire: Option<Retire>,
}

impl Drop for Index {
    fn drop(&mut self) {
        let Some(retire) = &self.retire else {
            return;
        };
        let retired = Retired {
            _keys: std::mem::take(&mut self.keys),
            _datasets: std::mem::take(&mut self.datasets),
        };
        // The reconciler gone (the manager stopped): freed here, as any value.
        let _freed_here_if_the_reconciler_is_gone = retire.send(retired);
    }
}

/// A dataset id as four big-endian words: ordered like the id's bytes.
type DatasetKey = [u64; 4];

fn dataset_key(dataset: &DatasetId) -> DatasetKey {
    let mut key = [0; 4];
    for (word, bytes) in key.iter_mut().zip(dataset.chunks_exact(8)) {
        let mut be = [0; 8];
        be.copy_from_slice(bytes);
        *word = u64::from_be_bytes(be);
    }
    key
}

#[derive(Debug, Default)]
struct DatasetIndex {
    /// `(start, end)` of each chunk, sorted by `(start, id)`: a lookup's last probe reads the
    /// end from the cache line the search just loaded.
    ranges: Vec<(u64, u64)>,
    residents: Vec<Arc<Resident>>,
    /// `max_end[leaves + i] = ranges[i].1`; inner nodes hold the max of their children.
    max_end: Vec<u64>,
    leaves: usize,
}

impl Index {
    /// Builds the snapshot from the reconciler's ordered map of visible chunks. Dropped, it
    /// sends its contents to `retire`, if given.
    pub(crate) fn build(
        visible: &BTreeMap<IndexKey, Arc<Resident>>,
        version: u64,
        retire: Option<Retire>,
    ) -> Self {
        let mut keys: Vec<DatasetKey> = Vec::new();
        let mut datasets: Vec<DatasetIndex> = Vec::new();
        for ((dataset, start, _), resident) in visible {
            let key = dataset_key(dataset);
            if keys.last() != Some(&key) {
                keys.push(key);
                datasets.push(DatasetIndex::default());
            }
            let Some(current) = datasets.last_mut() else {
                unreachable!("a dataset was pushed above");
            };
            current
                .ranges
                .push((*start, resident.chunk.block_range().end));
            current.residents.push(resident.clone());
        }
        let mut offsets = Vec::with_capacity(datasets.len());
        let mut offset = 0;
        for dataset in &mut datasets {
            dataset.build_tree();
            offsets.push(offset);
            offset += dataset.ranges.len();
        }
        Self {
            keys,
            datasets,
            offsets,
            ids: visible.keys().map(|(_, _, id)| *id).collect(),
            version,
            retire,
        }
    }

    /// A visible chunk of `dataset` whose range contains `block`: the one with the greatest
    /// `(start, id)` among those that do, so the answer is the same each time.
    pub(crate) fn find(&self, dataset: &DatasetId, block: u64) -> Option<&Arc<Resident>> {
        let position = self.keys.binary_search(&dataset_key(dataset)).ok()?;
        self.datasets[position].find(block)
    }

    /// Every visible chunk's id. `current` is the visible set's version now and `hides` the
    /// table's list of recent hides, read in that order. If the version is still the
    /// snapshot's, nothing was hidden since the build and the ids are copied as they are; if
    /// `hides` lists every hide since the build, the copy skips the hidden ones' positions;
    /// otherwise (a reader holding a snapshot older than the list) each resident is checked.
    pub(crate) fn ids(&self, current: u64, hides: &Hides) -> Vec<ChunkId> {
        if current == self.version {
            return self.ids.clone();
        }
        if hides.since <= self.version {
            return self.ids_without(hides);
        }
        self.visible_ids()
    }

    /// Every visible chunk's id, each resident checked: O(n) pointer reads.
    pub(crate) fn visible_ids(&self) -> Vec<ChunkId> {
        let mut ids = Vec::with_capacity(self.ids.len());
        for dataset in &self.datasets {
            ids.extend(
                dataset
                    .residents
                    .iter()
                    .filter(|resident| !resident.is_hidden())
                    .map(|resident| *resident.chunk.id()),
            );
        }
        ids
    }

    /// The ids, less the chunks `hides` names that this snapshot holds and that are still
    /// hidden (a chunk may have been shown again since): O(n) copying plus O(k log n).
    fn ids_without(&self, hides: &Hides) -> Vec<ChunkId> {
        let mut skipped: Vec<usize> = hides
            .hides
            .iter()
            .filter(|(hidden_at, _)| *hidden_at > self.version)
            .filter_map(|(_, key)| self.position(key))
            .filter(|&(dataset, at)| self.datasets[dataset].residents[at].is_hidden())
            .map(|(dataset, at)| self.offsets[dataset] + at)
            .collect();
        skipped.sort_unstable();
        skipped.dedup();
        let mut ids = Vec::with_capacity(self.ids.len() - skipped.len());
        let mut from = 0;
        for position in skipped {
            ids.extend_from_slice(&self.ids[from..position]);
            from = position + 1;
        }
        ids.extend_from_slice(&self.ids[from..]);
        ids
    }

    /// Where the chunk `key` is in this snapshot: its dataset's position and its own.
    fn position(&self, (dataset, start, id): &IndexKey) -> Option<(usize, usize)> {
        let which = self.keys.binary_search(&dataset_key(dataset)).ok()?;
        let chunks = &self.datasets[which];
        let first = chunks.ranges.partition_point(|&(from, _)| from < *start);
        let same_start = chunks.ranges[first..].partition_point(|&(from, _)| from == *start);
        (first..first + same_start)
            .find(|&at| chunks.residents[at].chunk.id() == id)
            .map(|at| (which, at))
    }
}

impl DatasetIndex {
    fn build_tree(&mut self) {
        self.leaves = self.ranges.len().next_power_of_two();
        self.max_end = vec![0; 2 * self.leaves];
        for (slot, &(_, end)) in self.max_end[self.leaves..].iter_mut().zip(&self.ranges) {
            *slot = end;
        }
        for node in (1..self.leaves).rev() {
            self.max_end[node] = self.max_end[2 * node].max(self.max_end[2 * node + 1]);
        }
    }

    fn find(&self, block: u64) -> Option<&Arc<Resident>> {
        // Chunks at positions below `limit` start at or before `block`.
        let mut limit = self.ranges.partition_point(|&(start, _)| start <= block);
        while limit > 0 {
            let last = limit - 1;
            let position = if self.ranges[last].1 > block {
                last
            } else {
                self.rightmost_covering(1, 0, self.leaves, last, block)?
            };
            let resident = &self.residents[position];
            if !resident.is_hidden() {
                return Some(resident);
            }
            limit = position;
        }
        None
    }

    /// The greatest position `<= last` in the subtree `node` (covering `lo..hi`) whose end is
    /// greater than `block`.
    fn rightmost_covering(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        last: usize,
        block: u64,
    ) -> Option<usize> {
        if lo > last || self.max_end[node] <= block {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.rightmost_covering(2 * node + 1, mid, hi, last, block)
            .or_else(|| self.rightmost_covering(2 * node, lo, mid, last, block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataChunk;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn resident(id: u8, dataset: u8, range: std::ops::Range<u64>) -> Arc<Resident> {
        let (sender, _) = crate::handle::Releases::channel();
        let chunk = DataChunk::new([id; 32], [dataset; 32], range, Default::default());
        Arc::new(Resident::new(Arc::new(chunk), PathBuf::new(), 0, 0, sender))
    }

    fn index_of(residents: &[Arc<Resident>]) -> Index {
        let map = residents
            .iter()
            .map(|r| (crate::table::index_key(&r.chunk), r.clone()))
            .collect();
        Index::build(&map, 0, None)
    }

    #[test]
    fn boundaries_are_half_open() {
        let index = index_of(&[resident(1, 0, 100..200), resident(2, 0, 200..300)]);
        let find = |block| index.find(&[0; 32], block).map(|r| r.chunk.id()[0]);
        assert_eq!(find(99), None);
        assert_eq!(find(100), Some(1));
        assert_eq!(find(199), Some(1));
        assert_eq!(find(200), Some(2));
        assert_eq!(find(299), Some(2));
        assert_eq!(find(300), None);
        assert_eq!(index.find(&[9; 32], 150).map(|r| r.chunk.id()[0]), None);
    }

    #[test]
    fn a_long_earlier_chunk_covers_past_short_later_ones() {
        let index = index_of(&[
            resident(1, 0, 0..1000),
            resident(2, 0, 10..20),
            resident(3, 0, 30..40),
        ]);
        assert_eq!(index.find(&[0; 32], 500).map(|r| r.chunk.id()[0]), Some(1));
        assert_eq!(index.find(&[0; 32], 15).map(|r| r.chunk.id()[0]), Some(2));
    }

    #[test]
    fn hidden_chunks_are_skipped() {
        let long = resident(1, 0, 0..1000);
        let short = resident(2, 0, 10..20);
        let index = index_of(&[long.clone(), short.clone()]);
        short.set_hidden(true);
        assert_eq!(index.find(&[0; 32], 15).map(|r| r.chunk.id()[0]), Some(1));
        long.set_hidden(true);
        assert!(index.find(&[0; 32], 15).is_none());
        // A version past the snapshot's with no list of hides: each resident is checked.
        let unlisted = Hides {
            since: 1,
            hides: Vec::new(),
        };
        assert!(index.ids(2, &unlisted).is_empty());
        assert!(index.visible_ids().is_empty());
        // The snapshot's own version: nothing hidden since its build, copied as is.
        assert_eq!(index.ids(0, &Hides::default()).len(), 2);
    }

    proptest! {
        /// `list_chunks` through the list of hides returns what reading every resident does:
        /// listed hides of chunks in the snapshot are skipped, listed chunks shown again or
        /// never in the snapshot change nothing, and hides the snapshot reflects are ignored.
        #[test]
        fn listed_hides_agree_with_reading_every_resident(
            chunks in prop::collection::vec((0u8..3, 0u64..50, any::<bool>(), any::<bool>()), 0..40),
            strangers in prop::collection::vec((0u8..3, 0u64..50), 0..4),
        ) {
            let residents: Vec<_> = chunks
                .iter()
                .enumerate()
                .map(|(i, &(dataset, start, _, _))| resident(i as u8, dataset, start..start + 5))
                .collect();
            let mut index = index_of(&residents);
            index.version = 3;
            let mut listed = Hides { since: 2, hides: Vec::new() };
            for (resident, &(_, _, hidden, listed_after_build)) in residents.iter().zip(&chunks) {
                resident.set_hidden(hidden);
                // Hidden since the build: listed. Listed but shown again: still listed.
                if hidden || listed_after_build {
                    listed = listed.with(4, crate::table::index_key(&resident.chunk));
                }
            }
            for (i, &(dataset, start)) in strangers.iter().enumerate() {
                let stranger = resident(200 + i as u8, dataset, start..start + 5);
                listed = listed.with(4, crate::table::index_key(&stranger.chunk));
            }
            let unlisted = Hides { since: 4, hides: Vec::new() };
            let expected: Vec<ChunkId> = residents
                .iter()
                .filter(|r| !r.is_hidden())
                .map(|r| *r.chunk.id())
                .collect();
            let mut by_index_order = index.ids(4, &unlisted);
            prop_assert_eq!(by_index_order.len(), expected.len());
            prop_assert_eq!(index.ids(4, &listed), by_index_order.clone());
            by_index_order.sort_unstable();
            let mut expected = expected;
            expected.sort_unstable();
            prop_assert_eq!(by_index_order, expected);
        }

        /// The index agrees with a linear scan that takes the greatest (start, id) covering chunk.
        #[test]
        fn agrees_with_a_linear_scan(
            ranges in prop::collection::vec((0u8..3, 0u64..200, 1u64..60, any::<bool>()), 0..40),
            blocks in prop::collection::vec(0u64..270, 1..40),
        ) {
            let residents: Vec<_> = ranges
                .iter()
                .enumerate()
                .map(|(i, &(dataset, start, len, _))| resident(i as u8, dataset, start..start + len))
                .collect();
            let index = index_of(&residents);
            for (resident, &(_, _, _, hidden)) in residents.iter().zip(&ranges) {
                resident.set_hidden(hidden);
            }
            for dataset in 0u8..3 {
                for &block in &blocks {
                    let expected = residents
                        .iter()
                        .filter(|r| !r.is_hidden() && r.chunk.dataset_id()[0] == dataset && r.chunk.block_range().contains(&block))
                        .max_by_key(|r| (r.chunk.block_range().start, *r.chunk.id()))
                        .map(|r| *r.chunk.id());
                    let found = index.find(&[dataset; 32], block).map(|r| *r.chunk.id());
                    prop_assert_eq!(found, expected);
                }
            }
        }
    }
}
