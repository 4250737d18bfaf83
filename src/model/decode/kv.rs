//! The KV cache: the keys and values of the positions a sequence has seen, per layer
//! ([`KvCache`], one [`LayerKv`] each), in buffers with room to grow. Both decoding paths
//! extend the same cache: the tensor path in the model's type, the packed path in f16
//! ([`KV_DTYPE`](super::host::KV_DTYPE)); a cache one path began is converted when the
//! other continues it.

use candle_core::{DType, Device, Tensor};

/// Positions a layer's KV buffers hold at first; they double when full (up to the
/// context). Small, because a buffer of the whole context per layer and sequence (18 MB
/// for age 0 at 1,024 positions) made every new chat session fault in and zero fresh
/// pages: a sixth of a 32-session decoding run went to the kernel clearing pages.
pub(in crate::model) const KV_INITIAL_CAPACITY: usize = 128;

/// Keys and values of one layer, in buffers with room for more positions (no
/// concatenation per token; a full buffer is copied once into one twice its size).
#[derive(Debug, Clone)]
pub(in crate::model) struct LayerKv {
    pub(in crate::model) k: Tensor, // [B, H, capacity, hd]
    pub(in crate::model) v: Tensor, // [B, H, capacity, hd]
    pub(in crate::model) len: usize,
}

impl LayerKv {
    /// A layer's cache with room for at least `needed` positions of keys and values
    /// shaped `[B, H, _, hd]`, keeping what `old` holds: exactly `room` positions when
    /// they suffice (the cache's hint, see [`KvCache::with_room`]), else a power of two.
    fn with_room(
        old: Option<LayerKv>,
        (b, h, hd): (usize, usize, usize),
        (needed, room): (usize, usize),
        max_seq_len: usize,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<LayerKv> {
        let capacity = if needed <= room {
            room.min(max_seq_len.max(needed))
        } else {
            needed
                .max(KV_INITIAL_CAPACITY)
                .next_power_of_two()
                .min(max_seq_len.max(needed))
        };
        // SAFETY: uninitialised buffers of plain numbers; every reader of a cache reads
        // its first `len` positions only, which are written before `len` grows. Zeroing
        // them cost a memset of every new session's buffers.
        let (k, v) = unsafe {
            (
                Tensor::empty((b, h, capacity, hd), dtype, dev)?,
                Tensor::empty((b, h, capacity, hd), dtype, dev)?,
            )
        };
        let len = match old {
            Some(o) if o.len > 0 => {
                let keep = |t: &Tensor| t.narrow(2, 0, o.len)?.to_dtype(dtype)?.contiguous();
                k.slice_set(&keep(&o.k)?, 2, 0)?;
                v.slice_set(&keep(&o.v)?, 2, 0)?;
                o.len
            }
            _ => 0,
        };
        Ok(LayerKv { k, v, len })
    }

    /// Positions the buffers hold.
    fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    /// The cache in `slot`, grown to hold `extra` more positions, in `dtype` (a cache
    /// the other path began is converted: the packed path keeps f16, the tensor path
    /// the model's type).
    pub(in crate::model) fn reserve<'a>(
        slot: &'a mut Option<LayerKv>,
        shape: (usize, usize, usize),
        (extra, room): (usize, usize),
        max_seq_len: usize,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<&'a mut LayerKv> {
        let len = slot.as_ref().map_or(0, |kv| kv.len);
        if slot
            .as_ref()
            .is_none_or(|kv| len + extra > kv.capacity() || kv.k.dtype() != dtype)
        {
            let needed = (len + extra, room);
            let grown = LayerKv::with_room(slot.take(), shape, needed, max_seq_len, dtype, dev)?;
            *slot = Some(grown);
        }
        match slot {
            Some(kv) => Ok(kv),
            None => candle_core::bail!("KV cache slot empty after reserve"),
        }
    }
}

/// Keys and values of the positions seen so far, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(in crate::model) layers: Vec<Option<LayerKv>>,
    /// Positions to make room for when a layer's buffers are first allocated (0: the
    /// default [`KV_INITIAL_CAPACITY`]).
    pub(in crate::model) room: usize,
    /// The copy head's keys and ids of the positions seen (empty without a copy head).
    pub(in crate::model) copy: crate::model::copy::CopyCache,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: vec![None; n_layers],
            room: 0,
            copy: Default::default(),
        }
    }

    /// A cache whose buffers start with room for `positions` (a generation that knows
    /// its prompt and token budget allocates once and never copies into larger ones).
    pub fn with_room(n_layers: usize, positions: usize) -> Self {
        KvCache {
            layers: vec![None; n_layers],
            room: positions,
            copy: Default::default(),
        }
    }
    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
