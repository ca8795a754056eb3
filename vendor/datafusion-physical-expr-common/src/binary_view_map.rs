// Licensed to the Apache Software Foundation (ASF) under one
// or more contributor license agreements.  See the NOTICE file
// distributed with this work for additional information
// regarding copyright ownership.  The ASF licenses this file
// to you under the Apache License, Version 2.0 (the
// "License"); you may not use this file except in compliance
// with the License.  You may obtain a copy of the License at
//
//   http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing,
// software distributed under the License is distributed on an
// "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
// KIND, either express or implied.  See the License for the
// specific language governing permissions and limitations
// under the License.

//! [`ArrowBytesViewMap`] and [`ArrowBytesViewSet`] for storing maps/sets of values from
//! `StringViewArray`/`BinaryViewArray`.
use crate::binary_map::OutputType;
use arrow::array::NullBufferBuilder;
use arrow::array::cast::AsArray;
use arrow::array::{
    Array, ArrayRef, BinaryViewArray, ByteView, GenericByteViewArray, make_view,
};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{BinaryViewType, ByteViewType, DataType, StringViewType};
use datafusion_common::hash_utils::{HashValue, RandomState, create_hashes};
use datafusion_common::utils::proxy::VecAllocExt;
use std::fmt::Debug;
use std::mem::size_of;
use std::sync::Arc;

/// HashSet optimized for storing string or binary values that can produce that
/// the final set as a `GenericBinaryViewArray` with minimal copies.
#[derive(Debug)]
pub struct ArrowBytesViewSet(ArrowBytesViewMap<()>);

impl ArrowBytesViewSet {
    pub fn new(output_type: OutputType) -> Self {
        Self(ArrowBytesViewMap::new(output_type))
    }

    /// Inserts each value from `values` into the set
    pub fn insert(&mut self, values: &ArrayRef) {
        fn make_payload_fn(_value: Option<&[u8]>) {}
        fn observe_payload_fn(_payload: ()) {}
        self.0
            .insert_if_new(values, make_payload_fn, observe_payload_fn);
    }

    /// Return the contents of this map and replace it with a new empty map with
    /// the same output type
    pub fn take(&mut self) -> Self {
        let mut new_self = Self::new(self.0.output_type);
        std::mem::swap(self, &mut new_self);
        new_self
    }

    /// Converts this set into a `StringViewArray` or `BinaryViewArray`
    /// containing each distinct value that was interned.
    /// This is done without copying the values.
    pub fn into_state(self) -> ArrayRef {
        self.0.into_state()
    }

    /// Returns the total number of distinct values (including nulls) seen so far
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// returns the total number of distinct values (not including nulls) seen so far
    pub fn non_null_len(&self) -> usize {
        self.0.non_null_len()
    }

    /// Return the total size, in bytes, of memory used to store the data in
    /// this set, not including `self`
    pub fn size(&self) -> usize {
        self.0.size()
    }
}

/// Optimized map for storing Arrow "byte view" types (`StringView`, `BinaryView`)
/// values that can produce the set of keys on
/// output as `GenericBinaryViewArray` without copies.
///
/// Equivalent to `HashSet<String, V>` but with better performance if you need
/// to emit the keys as an Arrow `StringViewArray` / `BinaryViewArray`. For other
/// purposes it is the same as a `HashMap<String, V>`
///
/// # Generic Arguments
///
/// * `V`: payload type
///
/// # Description
///
/// This is a specialized HashMap with the following properties:
///
/// 1. Optimized for storing and emitting Arrow byte types  (e.g.
///    `StringViewArray` / `BinaryViewArray`) very efficiently by minimizing copying of
///    the string values themselves, both when inserting and when emitting the
///    final array.
///
/// 2. Retains the insertion order of entries in the final array. The values are
///    in the same order as they were inserted.
///
/// Note this structure can be used as a `HashSet` by specifying the value type
/// as `()`, as is done by [`ArrowBytesViewSet`].
///
/// This map is used by the special `COUNT DISTINCT` aggregate function to
/// store the distinct values, and by the `GROUP BY` operator to store
/// group values when they are a single string array.
/// Max size of the in-progress buffer before flushing to completed buffers
const BYTE_VIEW_MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;

pub struct ArrowBytesViewMap<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    /// Should the output be StringView or BinaryView?
    output_type: OutputType,
    /// Underlying hash set for each distinct value (chunk-manager patch: an open-addressing
    /// table whose slots a lookup can prefetch, instead of hashbrown's `HashTable`)
    map: Slots<V>,

    /// Views for all stored values (in insertion order)
    views: Vec<u128>,
    /// In-progress buffer for out-of-line string data
    in_progress: Vec<u8>,
    /// Completed buffers containing string data
    completed: Vec<Buffer>,
    /// Tracks null values (true = null)
    nulls: NullBufferBuilder,

    /// random state used to generate hashes
    random_state: RandomState,
    /// buffer that stores hash values (reused across batches to save allocations)
    hashes_buffer: Vec<u64>,
    /// `(payload, null_index)` for the 'null' value, if any
    /// NOTE null_index is the logical index in the final array, not the index
    /// in the buffer
    null: Option<(V, usize)>,
}

/// chunk-manager patch: how many rows ahead of the one it looks up
/// [`ArrowBytesViewMap::insert_if_new`] prefetches a row's slot.
const PREFETCH_DISTANCE: usize = 16;

/// chunk-manager patch: out-of-line views of an input array whose payloads
/// [`ArrowBytesViewMap::insert_if_new`] remembers (a power of two).
const MEMO_SLOTS: usize = 256;

/// chunk-manager patch: whether [`ArrowBytesViewMap::insert_if_new`] remembers payloads by
/// view for an array with these views: if at least half of the out-of-line views among its
/// first [`MEMO_SAMPLE`] (and at least 16 of them) repeat an earlier one.
fn views_repeat(views: &[u128]) -> bool {
    let mut seen = [0u128; MEMO_SLOTS];
    let (mut long, mut repeats) = (0, 0);
    for &view in views.iter().take(MEMO_SAMPLE) {
        if view as u32 > 12 {
            long += 1;
            let slot = memo_slot(view);
            if seen[slot] == view {
                repeats += 1;
            }
            seen[slot] = view;
        }
    }
    long >= 16 && repeats * 2 >= long
}

/// chunk-manager patch: the views [`views_repeat`] looks at.
const MEMO_SAMPLE: usize = 256;

/// chunk-manager patch: the memo slot of an out-of-line view, from its buffer index and
/// offset (the high 64 bits), by Fibonacci hashing.
fn memo_slot(view: u128) -> usize {
    let location = (view >> 64) as u64;
    (location.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMO_SLOTS.trailing_zeros()))
        as usize
}

impl<V> ArrowBytesViewMap<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    pub fn new(output_type: OutputType) -> Self {
        Self {
            output_type,
            map: Slots::new(),
            views: Vec::new(),
            in_progress: Vec::new(),
            completed: Vec::new(),
            nulls: NullBufferBuilder::new(0),
            random_state: RandomState::default(),
            hashes_buffer: vec![],
            null: None,
        }
    }

    /// Return the contents of this map and replace it with a new empty map with
    /// the same output type
    pub fn take(&mut self) -> Self {
        let mut new_self = Self::new(self.output_type);
        std::mem::swap(self, &mut new_self);
        new_self
    }

    /// Inserts each value from `values` into the map, invoking `payload_fn` for
    /// each value if *not* already present, deferring the allocation of the
    /// payload until it is needed.
    ///
    /// Note that this is different than a normal map that would replace the
    /// existing entry
    ///
    /// # Arguments:
    ///
    /// `values`: array whose values are inserted
    ///
    /// `make_payload_fn`:  invoked for each value that is not already present
    /// to create the payload, in order of the values in `values`
    ///
    /// `observe_payload_fn`: invoked once, for each value in `values`, that was
    /// already present in the map, with corresponding payload value.
    ///
    /// # Returns
    ///
    /// The payload value for the entry, either the existing value or
    /// the newly inserted value
    ///
    /// # Safety:
    ///
    /// Note that `make_payload_fn` and `observe_payload_fn` are only invoked
    /// with valid values from `values`, not for the `NULL` value.
    pub fn insert_if_new<MP, OP>(
        &mut self,
        values: &ArrayRef,
        make_payload_fn: MP,
        observe_payload_fn: OP,
    ) where
        MP: FnMut(Option<&[u8]>) -> V,
        OP: FnMut(V),
    {
        // Sanity check array type
        match self.output_type {
            OutputType::BinaryView => {
                assert!(matches!(values.data_type(), DataType::BinaryView));
                self.insert_if_new_inner::<MP, OP, BinaryViewType>(
                    values,
                    make_payload_fn,
                    observe_payload_fn,
                )
            }
            OutputType::Utf8View => {
                assert!(matches!(values.data_type(), DataType::Utf8View));
                self.insert_if_new_inner::<MP, OP, StringViewType>(
                    values,
                    make_payload_fn,
                    observe_payload_fn,
                )
            }
            _ => unreachable!("Utf8/Binary should use `ArrowBytesSet`"),
        };
    }

    /// Generic version of [`Self::insert_if_new`] that handles `ByteViewType`
    /// (both StringView and BinaryView)
    ///
    /// Note this is the only function that is generic on [`ByteViewType`], which
    /// avoids having to template the entire structure,  making the code
    /// simpler and understand and reducing code bloat due to duplication.
    ///
    /// See comments on `insert_if_new` for more details
    fn insert_if_new_inner<MP, OP, B>(
        &mut self,
        values: &ArrayRef,
        mut make_payload_fn: MP,
        mut observe_payload_fn: OP,
    ) where
        MP: FnMut(Option<&[u8]>) -> V,
        OP: FnMut(V),
        B: ByteViewType,
    {
        // chunk-manager patch: a value repeated with the same view (a dictionary-encoded
        // Parquet column gives every occurrence of a dictionary entry the same view) is
        // hashed, looked up and compared once per array. Equal views of one array are equal
        // values: `memo` keeps the payloads of recently seen out-of-line views, by their
        // buffer and offset (an empty slot holds the view 0, of length 0, which no
        // out-of-line view equals). Only for arrays whose first views repeat: elsewhere the
        // memo's misses cost more than its hits save, and the loop is upstream's, hashes
        // computed first for the whole array. Either way a value's hash is the one
        // `create_hashes` gives, so the map's hashes agree.
        let values = values.as_byte_view::<B>();

        // Get raw views buffer for direct comparison
        let input_views = values.views();

        let use_memo = views_repeat(input_views);
        let batch_hashes = &mut self.hashes_buffer;
        batch_hashes.clear();
        if !use_memo {
            // step 1: compute hashes
            batch_hashes.resize(values.len(), 0);
            let array: &dyn Array = values;
            create_hashes([array], &self.random_state, batch_hashes)
                // hash is supported for all types and create_hashes only
                // returns errors for unsupported types
                .unwrap();
        }

        // step 2: insert each value into the set, if not already present
        // (chunk-manager patch: a loop compiled for each path)
        if use_memo {
            self.insert_rows::<MP, OP, B, true>(
                values,
                &mut make_payload_fn,
                &mut observe_payload_fn,
            )
        } else {
            self.insert_rows::<MP, OP, B, false>(
                values,
                &mut make_payload_fn,
                &mut observe_payload_fn,
            )
        }
    }

    /// chunk-manager patch: step 2 of [`Self::insert_if_new_inner`], compiled apart for
    /// arrays whose views repeat (`MEMO`: hashes computed as needed, payloads remembered by
    /// view) and the others (hashes computed first, slots prefetched), so that neither
    /// path's loop carries the other's code.
    fn insert_rows<MP, OP, B, const MEMO: bool>(
        &mut self,
        values: &GenericByteViewArray<B>,
        make_payload_fn: &mut MP,
        observe_payload_fn: &mut OP,
    ) where
        MP: FnMut(Option<&[u8]>) -> V,
        OP: FnMut(V),
        B: ByteViewType,
    {
        let input_views = values.views();
        let mut memo = [(0u128, V::default()); MEMO_SLOTS];
        for i in 0..values.len() {
            // chunk-manager patch: with the hashes known, the slot of a row a few rows ahead
            // is fetched into the cache while this one is looked up (a large table's slots
            // are cache misses).
            if !MEMO && let Some(&ahead) = self.hashes_buffer.get(i + PREFETCH_DISTANCE) {
                self.map.prefetch(ahead);
            }
            let view_u128 = input_views[i];

            // handle null value via validity bitmap check
            if values.is_null(i) {
                let payload = if let Some(&(payload, _offset)) = self.null.as_ref() {
                    payload
                } else {
                    let payload = make_payload_fn(None);
                    let null_index = self.views.len();
                    self.views.push(0);
                    self.nulls.append_null();
                    self.null = Some((payload, null_index));
                    payload
                };
                observe_payload_fn(payload);
                continue;
            }

            // Extract length from the view (first 4 bytes of u128 in little-endian)
            let len = view_u128 as u32;

            let slot = memo_slot(view_u128);
            let hash = if !MEMO {
                self.hashes_buffer[i]
            } else if len <= 12 {
                view_u128.hash_one(&self.random_state)
            } else if memo[slot].0 == view_u128 {
                observe_payload_fn(memo[slot].1);
                continue;
            } else {
                let value: &[u8] = values.value(i).as_ref();
                value.hash_one(&self.random_state)
            };

            // chunk-manager patch: an entry keeps a long value's bytes after the view's
            // prefix (see `Entry`), so a lookup compares them on the entry's own cache
            // line, not in the stored buffers.
            let input_value: &[u8] = if len <= 12 {
                &[]
            } else {
                values.value(i).as_ref()
            };

            // Check if value already exists
            let maybe_payload = {
                // Borrow completed and in_progress for comparison
                let completed = &self.completed;
                let in_progress = &self.in_progress;

                self.map
                    .find(hash, |header| {
                        header.matches(view_u128, input_value, completed, in_progress)
                    })
                    .map(|entry| entry.payload)
            };

            let payload = if let Some(payload) = maybe_payload {
                payload
            } else {
                // no existing value, make a new one
                let (new_view, payload) = if len <= 12 {
                    // Inline path: bytes are already packed in view_u128.
                    // The inline ByteView format is [len:u32 LE][data:12 bytes zero-padded],
                    // so extracting bytes from the u128 avoids a round-trip through
                    // values.value(i) (which reads the views buffer and returns the same slice).
                    let view_bytes = view_u128.to_le_bytes();
                    let value = &view_bytes[4..4 + len as usize];
                    let payload = make_payload_fn(Some(value));
                    // For inline strings, the stored view is identical to the input view:
                    // make_view(value, 0, 0) produces the same u128 as view_u128.
                    //
                    // SAFETY: view_u128 was a valid view, and the enclosing `len <= 12`
                    // ensures it is inline
                    let new_view = unsafe { self.append_inline_view(view_u128) };
                    (new_view, payload)
                } else {
                    let value = input_value;
                    let payload = make_payload_fn(Some(value));
                    let new_view = self.append_value(value);
                    (new_view, payload)
                };

                self.map
                    .insert_new(Entry::new(new_view, hash, payload, input_value));
                payload
            };
            if MEMO && len > 12 {
                memo[slot] = (view_u128, payload);
            }
            observe_payload_fn(payload);
        }
    }

    /// Converts this set into a `StringViewArray`, or `BinaryViewArray`,
    /// containing each distinct value
    /// that was inserted. This is done without copying the values.
    ///
    /// The values are guaranteed to be returned in the same order in which
    /// they were first seen.
    pub fn into_state(mut self) -> ArrayRef {
        // Flush any remaining in-progress buffer
        if !self.in_progress.is_empty() {
            let flushed = std::mem::take(&mut self.in_progress);
            self.completed.push(Buffer::from_vec(flushed));
        }

        // Build null buffer if we have any nulls
        let null_buffer = self.nulls.finish();

        let views = ScalarBuffer::from(self.views);
        let array =
            unsafe { BinaryViewArray::new_unchecked(views, self.completed, null_buffer) };

        match self.output_type {
            OutputType::BinaryView => Arc::new(array),
            OutputType::Utf8View => {
                // SAFETY: all input was valid utf8
                let array = unsafe { array.to_string_view_unchecked() };
                Arc::new(array)
            }
            _ => unreachable!("Utf8/Binary should use `ArrowBytesMap`"),
        }
    }

    /// Append an already-computed inline view (len <= 12) directly, bypassing
    /// buffer allocation.
    ///
    /// Returns the view that was stored (identical to the argument).
    ///
    /// # Safety
    ///
    /// `view` must be a valid inline `ByteView`: the length field in the low
    /// 32 bits must be <= 12, and the remaining 12 bytes must hold the
    /// value's bytes (zero-padded if shorter). Calling with a non-inline view
    /// would store a value that downstream `views` consumers interpret as
    /// `[buffer_index, offset]` into the `completed`/`in_progress` buffers,
    /// which is unsound for any view that didn't originate from a real
    /// allocation in those buffers.
    unsafe fn append_inline_view(&mut self, view: u128) -> u128 {
        self.views.push(view);
        self.nulls.append_non_null();
        view
    }

    /// Append a value to our buffers and return the view pointing to it
    fn append_value(&mut self, value: &[u8]) -> u128 {
        let len = value.len();
        let view = if len <= 12 {
            make_view(value, 0, 0)
        } else {
            // Ensure buffer is big enough
            if self.in_progress.len() + len > BYTE_VIEW_MAX_BLOCK_SIZE {
                let flushed = std::mem::replace(
                    &mut self.in_progress,
                    Vec::with_capacity(BYTE_VIEW_MAX_BLOCK_SIZE),
                );
                self.completed.push(Buffer::from_vec(flushed));
            }

            let buffer_index = self.completed.len() as u32;
            let offset = self.in_progress.len() as u32;
            self.in_progress.extend_from_slice(value);

            make_view(value, buffer_index, offset)
        };

        self.views.push(view);
        self.nulls.append_non_null();
        view
    }

    /// Total number of entries (including null, if present)
    pub fn len(&self) -> usize {
        self.non_null_len() + self.null.map(|_| 1).unwrap_or(0)
    }

    /// Is the set empty?
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.null.is_none()
    }

    /// Number of non null entries
    pub fn non_null_len(&self) -> usize {
        self.map.len()
    }

    /// Return the total size, in bytes, of memory used to store the data in
    /// this set, not including `self`
    pub fn size(&self) -> usize {
        let views_size = self.views.len() * size_of::<u128>();
        let in_progress_size = self.in_progress.capacity();
        let completed_size: usize = self.completed.iter().map(|b| b.len()).sum();
        let nulls_size = self.nulls.allocated_size();

        self.map.size()
            + views_size
            + in_progress_size
            + completed_size
            + nulls_size
            + self.hashes_buffer.allocated_size()
    }
}

impl<V> Debug for ArrowBytesViewMap<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowBytesMap")
            .field("map", &"<map>")
            .field("map_size", &self.map.size())
            .field("views_len", &self.views.len())
            .field("completed_buffers", &self.completed.len())
            .field("random_state", &self.random_state)
            .field("hashes_buffer", &self.hashes_buffer)
            .finish()
    }
}

/// Entry in the hash table -- see [`ArrowBytesViewMap`] for more details
///
/// Stores the view pointing to our internal buffers, eliminating the need
/// for a separate builder index. For inline strings (<=12 bytes), the view
/// contains the entire value. For out-of-line strings, the view contains
/// buffer_index and offset pointing directly to our storage.
/// (chunk-manager patch: the view is split between `head` and `tail`, beside the bytes a
/// lookup compares.)
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
struct Entry<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    /// chunk-manager patch: the low 64 bits of the stored view (length and 4-byte prefix).
    /// Upstream keeps the whole view (16 bytes), whose buffer index and offset a lookup of
    /// a long value follows to compare its bytes: a second cache miss per row.
    head: u64,

    /// chunk-manager patch: the value's hash as [`Slots`] keeps it (its tag, never 0; 0 marks
    /// an empty slot)
    hash: u64,

    /// value stored by the entry
    payload: V,

    /// chunk-manager patch: the rest of the value, compared on the entry's cache line:
    /// - an inline value (up to 12 bytes): the view's high 64 bits (bytes 4..12);
    /// - a value of up to `4 + ENTRY_TAIL` bytes: its bytes after the prefix;
    /// - a longer one: its bytes `4..4 + LONG_KEPT`, then the view's high 64 bits (buffer
    ///   index and offset) for the bytes past them.
    tail: [u8; ENTRY_TAIL],
}

/// chunk-manager patch: the bytes an [`Entry`] keeps after the view's prefix: with the
/// head, the hash and an 8-byte payload, an entry fills one 64-byte cache line, and values
/// of up to 44 bytes (such as `0x`-prefixed hex addresses, 42) are compared there.
const ENTRY_TAIL: usize = 40;

/// chunk-manager patch: the bytes after the prefix an [`Entry`] keeps of a value longer
/// than `4 + ENTRY_TAIL`; the view's location takes the last 8 bytes of the tail.
const LONG_KEPT: usize = ENTRY_TAIL - 8;

impl<V> Entry<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    /// chunk-manager patch: an empty slot of [`Slots`].
    fn empty() -> Self {
        Self {
            head: 0,
            hash: 0,
            payload: V::default(),
            tail: [0; ENTRY_TAIL],
        }
    }

    /// chunk-manager patch: the entry of the stored `view` of `value` (empty for an inline
    /// value), whose hash is `hash`.
    fn new(view: u128, hash: u64, payload: V, value: &[u8]) -> Self {
        let len = view as u32 as usize;
        let high = ((view >> 64) as u64).to_le_bytes();
        let mut tail = [0u8; ENTRY_TAIL];
        if len <= 12 {
            tail[..8].copy_from_slice(&high);
        } else if len <= 4 + ENTRY_TAIL {
            tail[..len - 4].copy_from_slice(&value[4..len]);
        } else {
            tail[..LONG_KEPT].copy_from_slice(&value[4..4 + LONG_KEPT]);
            tail[LONG_KEPT..].copy_from_slice(&high);
        }
        Self {
            head: view as u64,
            hash: Slots::<V>::tag(hash),
            payload,
            tail,
        }
    }

    /// chunk-manager patch: whether this entry holds the value of the input `view`, whose
    /// bytes are `value` (empty for an inline value); only the bytes of a value longer than
    /// `4 + ENTRY_TAIL` past those the entry keeps are read from the stored buffers.
    fn matches(
        &self,
        view: u128,
        value: &[u8],
        completed: &[Buffer],
        in_progress: &[u8],
    ) -> bool {
        if self.head != view as u64 {
            return false;
        }
        let len = view as u32 as usize;
        if len <= 12 {
            return self.tail[..8] == ((view >> 64) as u64).to_le_bytes();
        }
        if len <= 4 + ENTRY_TAIL {
            return self.tail[..len - 4] == value[4..len];
        }
        if self.tail[..LONG_KEPT] != value[4..4 + LONG_KEPT] {
            return false;
        }
        let mut high = [0u8; 8];
        high.copy_from_slice(&self.tail[LONG_KEPT..]);
        let stored = u128::from(self.head) | (u128::from(u64::from_le_bytes(high)) << 64);
        stored_bytes(stored, completed, in_progress)[4 + LONG_KEPT..]
            == value[4 + LONG_KEPT..]
    }
}

/// chunk-manager patch: the map's hash table: open addressing with linear probing over a
/// power-of-two array of [`Entry`]s, at most three quarters full. An entry keeps its hash
/// with the lowest bit set (its tag), so a slot whose hash is 0 is empty; a value's first
/// slot is given by the hash's high bits. A lookup that finds the value in its first slot
/// reads one cache line (hashbrown's table reads its control bytes, then the entry: two),
/// and that line can be prefetched ([`Slots::prefetch`]) while earlier rows are looked up.
struct Slots<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    /// The slots; their number is a power of two.
    entries: Vec<Entry<V>>,
    /// Occupied slots.
    len: usize,
    /// `64 - log2(entries.len())`: a hash shifted right by this many bits is a slot.
    shift: u32,
}

/// chunk-manager patch: the slots of a new [`Slots`] (4 KiB of 64-byte entries; upstream's
/// `HashTable` starts with room for 512 entries).
const INITIAL_SLOTS: usize = 64;

impl<V> Slots<V>
where
    V: Debug + PartialEq + Eq + Clone + Copy + Default,
{
    fn new() -> Self {
        Self::with_slots(INITIAL_SLOTS)
    }

    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two() && slots >= 2);
        Self {
            entries: vec![Entry::empty(); slots],
            len: 0,
            shift: 64 - slots.trailing_zeros(),
        }
    }

    /// The hash an entry of `hash` keeps: never 0.
    fn tag(hash: u64) -> u64 {
        hash | 1
    }

    /// The first slot of a value whose entry's hash is `tag`.
    fn home(&self, tag: u64) -> usize {
        (tag >> self.shift) as usize
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes allocated.
    fn size(&self) -> usize {
        self.entries.capacity() * size_of::<Entry<V>>()
    }

    /// Asks the CPU to bring the first slot of a value of `hash` into the cache.
    #[inline]
    fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot: *const Entry<V> = &self.entries[self.home(Self::tag(hash))];
            // SAFETY: SSE is part of x86_64's baseline; a prefetch only hints the cache, reads
            // nothing and cannot fault, and `slot` points into `entries` anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot.cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The entry of hash `hash` for which `eq` holds, if any.
    #[inline]
    fn find(&self, hash: u64, eq: impl Fn(&Entry<V>) -> bool) -> Option<&Entry<V>> {
        let tag = Self::tag(hash);
        let mask = self.entries.len() - 1;
        let mut slot = self.home(tag);
        loop {
            let entry = &self.entries[slot];
            if entry.hash == tag && eq(entry) {
                return Some(entry);
            }
            if entry.hash == 0 {
                return None;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Adds `entry`, whose value is not in the table, growing it first if it would be more
    /// than three quarters full.
    fn insert_new(&mut self, entry: Entry<V>) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            let mut grown = Self::with_slots(self.entries.len() * 2);
            for old in self.entries.iter().filter(|old| old.hash != 0) {
                grown.place(*old);
            }
            *self = grown;
        }
        self.place(entry);
    }

    /// Puts `entry` in the first free slot of its probe sequence.
    fn place(&mut self, entry: Entry<V>) {
        let mask = self.entries.len() - 1;
        let mut slot = self.home(entry.hash);
        while self.entries[slot].hash != 0 {
            slot = (slot + 1) & mask;
        }
        self.entries[slot] = entry;
        self.len += 1;
    }
}

/// chunk-manager patch: the stored bytes of an out-of-line `view`.
fn stored_bytes<'a>(
    view: u128,
    completed: &'a [Buffer],
    in_progress: &'a [u8],
) -> &'a [u8] {
    let byte_view = ByteView::from(view);
    let stored_len = byte_view.length as usize;
    let buffer_index = byte_view.buffer_index as usize;
    let offset = byte_view.offset as usize;
    if buffer_index < completed.len() {
        &completed[buffer_index].as_slice()[offset..offset + stored_len]
    } else {
        &in_progress[offset..offset + stored_len]
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{GenericByteViewArray, StringViewArray};
    use datafusion_common::HashMap;

    use super::*;

    // asserts that the set contains the expected strings, in the same order
    fn assert_set(set: ArrowBytesViewSet, expected: &[Option<&str>]) {
        let strings = set.into_state();
        let strings = strings.as_string_view();
        let state = strings.into_iter().collect::<Vec<_>>();
        assert_eq!(state, expected);
    }

    #[test]
    fn string_view_set_empty() {
        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let array: ArrayRef = Arc::new(StringViewArray::new_null(0));
        set.insert(&array);
        assert_eq!(set.len(), 0);
        assert_eq!(set.non_null_len(), 0);
        assert_set(set, &[]);
    }

    #[test]
    fn string_view_set_one_null() {
        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let array: ArrayRef = Arc::new(StringViewArray::new_null(1));
        set.insert(&array);
        assert_eq!(set.len(), 1);
        assert_eq!(set.non_null_len(), 0);
        assert_set(set, &[None]);
    }

    #[test]
    fn string_view_set_many_null() {
        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let array: ArrayRef = Arc::new(StringViewArray::new_null(11));
        set.insert(&array);
        assert_eq!(set.len(), 1);
        assert_eq!(set.non_null_len(), 0);
        assert_set(set, &[None]);
    }

    #[test]
    fn test_string_view_set_basic() {
        // basic test for mixed small and large string values
        let values = GenericByteViewArray::from(vec![
            Some("a"),
            Some("b"),
            Some("CXCCCCCCCCAABB"), // 14 bytes
            Some(""),
            Some("cbcxx"), // 5 bytes
            None,
            Some("AAAAAAAA"),     // 8 bytes
            Some("BBBBBQBBBAAA"), // 12 bytes
            Some("a"),
            Some("cbcxx"),
            Some("b"),
            Some("cbcxx"),
            Some(""),
            None,
            Some("BBBBBQBBBAAA"),
            Some("BBBBBQBBBAAA"),
            Some("AAAAAAAA"),
            Some("CXCCCCCCCCAABB"),
        ]);

        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let array: ArrayRef = Arc::new(values);
        set.insert(&array);
        // values mut appear be in the order they were inserted
        assert_set(
            set,
            &[
                Some("a"),
                Some("b"),
                Some("CXCCCCCCCCAABB"),
                Some(""),
                Some("cbcxx"),
                None,
                Some("AAAAAAAA"),
                Some("BBBBBQBBBAAA"),
            ],
        );
    }

    #[test]
    fn test_string_set_non_utf8() {
        // basic test for mixed small and large string values
        let values = GenericByteViewArray::from(vec![
            Some("a"),
            Some("✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥"),
            Some("🔥"),
            Some("✨✨✨"),
            Some("foobarbaz"),
            Some("🔥"),
            Some("✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥"),
        ]);

        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let array: ArrayRef = Arc::new(values);
        set.insert(&array);
        // strings mut appear be in the order they were inserted
        assert_set(
            set,
            &[
                Some("a"),
                Some("✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥✨🔥"),
                Some("🔥"),
                Some("✨✨✨"),
                Some("foobarbaz"),
            ],
        );
    }

    // Test use of binary output type
    #[test]
    fn test_binary_set() {
        let v: Vec<Option<&[u8]>> = vec![
            Some(b"a"),
            Some(b"CXCCCCCCCCCCCCC"),
            None,
            Some(b"CXCCCCCCCCCCCCC"),
        ];
        let values: ArrayRef = Arc::new(BinaryViewArray::from(v));

        let expected: Vec<Option<&[u8]>> =
            vec![Some(b"a"), Some(b"CXCCCCCCCCCCCCC"), None];
        let expected: ArrayRef = Arc::new(GenericByteViewArray::from(expected));

        let mut set = ArrowBytesViewSet::new(OutputType::BinaryView);
        set.insert(&values);
        assert_eq!(&set.into_state(), &expected);
    }

    // inserting strings into the set does not increase reported memory
    #[test]
    fn test_string_set_memory_usage() {
        let strings1 = StringViewArray::from(vec![
            Some("a"),
            Some("b"),
            Some("CXCCCCCCCCCCC"), // 13 bytes
            Some("AAAAAAAA"),      // 8 bytes
            Some("BBBBBQBBB"),     // 9 bytes
        ]);
        let total_strings1_len = strings1
            .iter()
            .map(|s| s.map(|s| s.len()).unwrap_or(0))
            .sum::<usize>();
        let values1: ArrayRef = Arc::new(StringViewArray::from(strings1));

        // Much larger strings in strings2
        let strings2 = StringViewArray::from(vec![
            "FOO".repeat(1000),
            "BAR larger than 12 bytes.".repeat(100_000),
            "more unique.".repeat(1000),
            "more unique2.".repeat(1000),
            "FOO".repeat(3000),
        ]);
        let total_strings2_len = strings2
            .iter()
            .map(|s| s.map(|s| s.len()).unwrap_or(0))
            .sum::<usize>();
        let values2: ArrayRef = Arc::new(StringViewArray::from(strings2));

        let mut set = ArrowBytesViewSet::new(OutputType::Utf8View);
        let size_empty = set.size();

        set.insert(&values1);
        let size_after_values1 = set.size();
        assert!(size_empty < size_after_values1);
        assert!(
            size_after_values1 > total_strings1_len,
            "expect {size_after_values1} to be more than {total_strings1_len}"
        );
        assert!(size_after_values1 < total_strings1_len + total_strings2_len);

        // inserting the same strings should not affect the size
        set.insert(&values1);
        assert_eq!(set.size(), size_after_values1);
        assert_eq!(set.len(), 5);

        // inserting the large strings should increase the reported size
        set.insert(&values2);
        let size_after_values2 = set.size();
        assert!(size_after_values2 > size_after_values1);

        assert_eq!(set.len(), 10);
    }

    #[derive(Debug, PartialEq, Eq, Default, Clone, Copy)]
    struct TestPayload {
        // store the string value to check against input
        index: usize, // store the index of the string (each new string gets the next sequential input)
    }

    /// Wraps an [`ArrowBytesViewMap`], validating its invariants
    struct TestMap {
        map: ArrowBytesViewMap<TestPayload>,
        // stores distinct strings seen, in order
        strings: Vec<Option<String>>,
        // map strings to index in strings
        indexes: HashMap<Option<String>, usize>,
    }

    impl TestMap {
        /// creates a map with TestPayloads for the given strings and then
        /// validates the payloads
        fn new() -> Self {
            Self {
                map: ArrowBytesViewMap::new(OutputType::Utf8View),
                strings: vec![],
                indexes: HashMap::new(),
            }
        }

        /// Inserts strings into the map
        fn insert(&mut self, strings: &[Option<&str>]) {
            let string_array = StringViewArray::from(strings.to_vec());
            let arr: ArrayRef = Arc::new(string_array);
            self.insert_array(&arr, strings);
        }

        /// Inserts `arr`, whose values are `strings` (chunk-manager patch: split from
        /// `insert` for arrays with repeated views)
        fn insert_array(&mut self, arr: &ArrayRef, strings: &[Option<&str>]) {
            let mut next_index = self.indexes.len();
            let mut actual_new_strings = vec![];
            let mut actual_seen_indexes = vec![];
            // update self with new values, keeping track of newly added values
            for str in strings {
                let str = str.map(|s| s.to_string());
                let index = self.indexes.get(&str).cloned().unwrap_or_else(|| {
                    actual_new_strings.push(str.clone());
                    let index = self.strings.len();
                    self.strings.push(str.clone());
                    self.indexes.insert(str, index);
                    index
                });
                actual_seen_indexes.push(index);
            }

            // insert the values into the map, recording what we did
            let mut seen_new_strings = vec![];
            let mut seen_indexes = vec![];
            self.map.insert_if_new(
                arr,
                |s| {
                    let value = s
                        .map(|s| String::from_utf8(s.to_vec()).expect("Non utf8 string"));
                    let index = next_index;
                    next_index += 1;
                    seen_new_strings.push(value);
                    TestPayload { index }
                },
                |payload| {
                    seen_indexes.push(payload.index);
                },
            );

            assert_eq!(actual_seen_indexes, seen_indexes);
            assert_eq!(actual_new_strings, seen_new_strings);
        }

        /// Call `self.map.into_array()` validating that the strings are in the same
        /// order as they were inserted
        fn into_array(self) -> ArrayRef {
            let Self {
                map,
                strings,
                indexes: _,
            } = self;

            let arr = map.into_state();
            let expected: ArrayRef = Arc::new(StringViewArray::from(strings));
            assert_eq!(&arr, &expected);
            arr
        }
    }

    #[test]
    fn entry_compares_every_byte() {
        // chunk-manager patch: an entry matches exactly its own value, whatever byte of a
        // value of the same length and prefix differs: inline values, values kept whole in
        // the entry, and longer ones whose last bytes are read from the stored buffers (a
        // lookup compares them only on equal hashes, so a map test cannot reach this).
        let values: Vec<Vec<u8>> = [3usize, 12, 13, 42, 44, 45, 50, 100]
            .iter()
            .map(|&len| (0..len).map(|i| b'a' + (i * 7 % 26) as u8).collect())
            .collect();
        let mut stored = Vec::new();
        let mut views = Vec::new();
        for value in &values {
            views.push(make_view(value, 0, stored.len() as u32));
            stored.extend_from_slice(value);
        }
        let completed = vec![Buffer::from_vec(stored)];
        for (value, &view) in values.iter().zip(&views) {
            let kept: &[u8] = if value.len() <= 12 { &[] } else { value };
            let entry = Entry::new(view, 0, (), kept);
            // The input's view is at another place, as a query's array is.
            let input = |bytes: &[u8]| make_view(bytes, 3, 1000);
            let input_bytes = |bytes: &[u8]| -> Vec<u8> {
                if bytes.len() <= 12 {
                    vec![]
                } else {
                    bytes.to_vec()
                }
            };
            assert!(entry.matches(input(value), &input_bytes(value), &completed, &[]));
            for position in 0..value.len() {
                let mut other = value.clone();
                other[position] ^= 1;
                assert!(
                    !entry.matches(input(&other), &input_bytes(&other), &completed, &[]),
                    "{} bytes, byte {position} differs",
                    value.len()
                );
            }
        }
    }

    #[test]
    fn test_map_values_compared_past_the_entry() {
        // chunk-manager patch: values that agree on their length and prefix and differ
        // only inside the bytes an entry keeps, only past them (a value of more than 44
        // bytes), or only in their last byte at exactly 44 bytes; 5,000 of them, so the
        // table grows (and places its entries again by their kept hashes) many times. Each batch repeats the
        // values already inserted: every one maps back to its first group.
        let mut values: Vec<String> = Vec::new();
        for i in 0..1250 {
            values.push(format!("0x{i:040x}")); // 42 bytes, differing in the tail
            values.push(format!("0x{:040x}{i:08x}", 0)); // 50 bytes, differing past it
            values.push(
                format!("0x{:041x}{}", 0, (b'a' + (i % 26) as u8) as char)
                    + &"z".repeat(i / 26),
            ); // 44 bytes and longer, differing at 44 and past
            values.push(format!("v{i}")); // inline
        }
        values.sort();
        values.dedup();
        let mut test_map = TestMap::new();
        for batch in values.chunks(700) {
            let batch: Vec<Option<&str>> =
                batch.iter().map(|s| Some(s.as_str())).collect();
            test_map.insert(&batch);
        }
        let all: Vec<Option<&str>> = values.iter().map(|s| Some(s.as_str())).collect();
        test_map.insert(&all);
        assert_eq!(test_map.strings.len(), values.len());
        let expected: ArrayRef = Arc::new(StringViewArray::from(
            test_map
                .strings
                .iter()
                .map(|s| s.as_deref())
                .collect::<Vec<_>>(),
        ));
        assert_eq!(&test_map.into_array(), &expected);
    }

    /// chunk-manager patch: values repeated by view, as a dictionary-encoded Parquet
    /// column gives them, get the payload of their first occurrence, over more distinct
    /// views than the memo has slots; equal values at other offsets, inline values and
    /// nulls too.
    #[test]
    fn test_map_repeated_views() {
        // Dictionary entries: long values, short (inline) ones, and long values repeated at
        // a second offset.
        let entries: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => format!("a long value, number {i:05}"),
                1 => format!("s{i}"),
                _ => format!("a long value, number {:05}", i - 2),
            })
            .collect();
        let mut bytes = Vec::new();
        let mut dictionary = Vec::new();
        for entry in &entries {
            dictionary.push(make_view(entry.as_bytes(), 0, bytes.len() as u32));
            bytes.extend_from_slice(entry.as_bytes());
        }
        let buffer = Buffer::from_vec(bytes);
        let mut test_map = TestMap::new();
        let mut state = 7u64;
        let mut last = Vec::new();
        for _batch in 0..8 {
            let mut views = Vec::new();
            let mut valid = Vec::new();
            let mut strings = Vec::new();
            for row in 0..2000 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Skewed towards the first entries, as popular values are.
                let uniform = |shift: u64| (state >> shift) % 300;
                let key = (uniform(40) * uniform(30) * uniform(20) / 90_000) as usize;
                let null = row % 17 == 0;
                views.push(if null { 0 } else { dictionary[key] });
                valid.push(!null);
                strings.push((!null).then(|| entries[key].as_str()));
            }
            let array = StringViewArray::try_new(
                ScalarBuffer::from(views),
                vec![buffer.clone()],
                Some(arrow::buffer::NullBuffer::from(valid)),
            )
            .unwrap();
            assert!(views_repeat(array.views()), "the memo is used");
            let arr: ArrayRef = Arc::new(array);
            test_map.insert_array(&arr, &strings);
            last = strings;
        }
        // The same values, each with a view of its own: no memo, and the same groups (the
        // hashes of both paths agree).
        let unique = StringViewArray::from(last.clone());
        assert!(!views_repeat(unique.views()));
        test_map.insert(&last);
        let distinct = test_map.strings.len();
        assert!(distinct > 150, "{distinct}");
        let expected: ArrayRef = Arc::new(StringViewArray::from(
            test_map
                .strings
                .iter()
                .map(|s| s.as_deref())
                .collect::<Vec<_>>(),
        ));
        assert_eq!(&test_map.into_array(), &expected);
    }

    #[test]
    fn slots_probe_past_the_end_and_keep_every_entry_as_they_grow() {
        // chunk-manager patch: entries whose hashes share their high bits (so their first
        // slot) form one probe sequence; with the last slot first, it wraps to slot 0. Each
        // is found by its value, a value not inserted is not, and every entry is found again
        // after the table has grown from 64 slots to 4,096.
        let mut slots: Slots<usize> = Slots::new();
        let view = |i: usize| make_view(format!("v{i}").as_bytes(), 0, 0);
        let find = |slots: &Slots<usize>, hash: u64, i: usize| {
            slots
                .find(hash, |entry| entry.matches(view(i), &[], &[], &[]))
                .map(|entry| entry.payload)
        };
        let last = u64::MAX; // the last slot, at any size
        let first = 0; // slot 0, where the wrapped sequence goes on
        for i in 0..20 {
            slots.insert_new(Entry::new(view(i), last, i, &[]));
            slots.insert_new(Entry::new(view(100 + i), first, 100 + i, &[]));
        }
        for i in 0..20 {
            assert_eq!(find(&slots, last, i), Some(i));
            assert_eq!(find(&slots, first, 100 + i), Some(100 + i));
            assert_eq!(find(&slots, first, i), None, "same value, another hash");
        }
        assert_eq!(find(&slots, last, 20), None);
        for i in 1000..3000 {
            slots.insert_new(Entry::new(view(i), (i as u64) << 50, i, &[]));
        }
        assert_eq!(slots.len(), 2040);
        assert_eq!(slots.entries.len(), 4096, "grown to stay at most 3/4 full");
        for i in 0..20 {
            assert_eq!(find(&slots, last, i), Some(i));
            assert_eq!(find(&slots, first, 100 + i), Some(100 + i));
        }
        for i in 1000..3000 {
            assert_eq!(find(&slots, (i as u64) << 50, i), Some(i));
        }
        assert_eq!(slots.size(), 4096 * size_of::<Entry<usize>>());
    }

    /// chunk-manager patch: the cost of a row looked up in a map of 40,000 to 700,000
    /// distinct 42-byte values (300 arrays of 8,192 rows in random order; best of 5). Run:
    /// `cargo test --release --lib slots_load_benchmark -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn slots_load_benchmark() {
        for distinct in [40_000u64, 100_000, 180_000, 700_000] {
            let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % distinct
            };
            let arrays: Vec<ArrayRef> = (0..300)
                .map(|_| {
                    let values = (0..8192).map(|_| format!("0x{:040x}", next()));
                    Arc::new(StringViewArray::from_iter_values(values)) as ArrayRef
                })
                .collect();
            let (mut best, mut size) = (f64::MAX, 0);
            for _ in 0..5 {
                let mut map = ArrowBytesViewMap::<usize>::new(OutputType::Utf8View);
                let mut groups = 0;
                let started = std::time::Instant::now();
                for array in &arrays {
                    map.insert_if_new(
                        array,
                        |_| {
                            groups += 1;
                            groups
                        },
                        |group| {
                            std::hint::black_box(group);
                        },
                    );
                }
                best = best.min(started.elapsed().as_secs_f64());
                size = map.size();
            }
            println!(
                "{distinct} distinct values: {:.1} ns per row, {} MiB",
                best * 1e9 / (300.0 * 8192.0),
                size >> 20
            );
        }
    }

    #[test]
    fn test_map() {
        let input = vec![
            // Note mix of short/long strings
            Some("A"),
            Some("bcdefghijklmnop1234567"),
            Some("X"),
            Some("Y"),
            None,
            Some("qrstuvqxyzhjwya"),
            Some("✨🔥"),
            Some("🔥"),
            Some("🔥🔥🔥🔥🔥🔥"),
        ];

        let mut test_map = TestMap::new();
        test_map.insert(&input);
        test_map.insert(&input); // put it in twice
        let expected_output: ArrayRef = Arc::new(StringViewArray::from(input));
        assert_eq!(&test_map.into_array(), &expected_output);
    }
}
