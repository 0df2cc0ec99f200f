"""Device memory: a caching-allocator model for simulated devices, an adapter for CUDA.

Both back ends implement :class:`DeviceMemory` (allocate/free opaque handles, read
:class:`MemoryStats`, ``empty_cache``), so the VRAM cliff experiment runs the same code on
a simulated board and on a real GPU. Both raise :class:`agents.errors.OutOfDeviceMemory`
when an allocation does not fit.

:class:`SimulatedMemory` follows the rules of PyTorch's CUDA caching allocator closely
enough that fragmentation is real: requests are rounded to 512 B; requests of at most
1 MiB come from a small pool of 2 MiB segments; larger requests under 10 MiB get a 20 MiB
segment; requests of 10 MiB and more get a segment of their size rounded up to
``block_granularity_mib``. A free block is found best-fit and split when the rest is large
enough (512 B in the small pool, over 1 MiB in the large one); a freed block coalesces
with free neighbours of its own segment only. A free block inside a segment that still
holds other blocks is an *inactive split* block: memory that is reserved, not allocated,
and that ``empty_cache`` cannot give back. When a new segment does not fit, the allocator
first releases every fully free cached segment and retries, then raises.

:class:`ActivationModel` answers how many bytes a causal LM (GPT-2 or the Llama family:
GQA, SwiGLU, RoPE, tied or untied embeddings) holds: its weights, its KV cache, and the
peak of a prefill and of a decode step, as a function of batch, context, shape, dtype and
KV cache; on a simulated device the VRAM cliff search allocates exactly those tensors, so
the cliff lies at a point computable from the model (:meth:`ActivationModel.max_context`).

All sizes are bytes unless a name says otherwise; "MB" in profile fields means MiB (NVML
reports MiB).
"""

from __future__ import annotations

import abc
import bisect
import itertools
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from agents.errors import OutOfDeviceMemory

MiB = 1 << 20
_MIN_BLOCK_BYTES = 512  # every request is rounded up to a multiple of this
_SMALL_SIZE_BYTES = 1 * MiB  # requests up to this size use the small pool
_LARGE_BUFFER_BYTES = 20 * MiB  # segment size for large requests under _MIN_LARGE_ALLOC
_MIN_LARGE_ALLOC_BYTES = 10 * MiB

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryStats:
    """One read of the allocator's counters (bytes), as torch.cuda.memory_stats() names them."""

    allocated_bytes: int
    reserved_bytes: int
    inactive_split_bytes: int
    inactive_split_blocks: int
    largest_free_block_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    num_ooms: int = 0
    num_alloc_retries: int = 0
    segments: int = 0

    @property
    def fragmentation(self) -> float:
        """inactive_split_bytes / reserved_bytes: reserved memory stranded in split segments.

        A ratio of bytes to bytes, read while the blocks are still held. (TR122 divided the
        inactive split block *count* by reserved bytes and read it after empty_cache, which
        is always ~0.)
        """
        return self.inactive_split_bytes / self.reserved_bytes if self.reserved_bytes else 0.0

    def to_dict(self) -> dict:
        """Plain dict for JSON, with MiB twins and the fragmentation ratio."""
        d = asdict(self)
        d["allocated_mib"] = self.allocated_bytes / MiB
        d["reserved_mib"] = self.reserved_bytes / MiB
        d["inactive_split_mib"] = self.inactive_split_bytes / MiB
        d["largest_free_block_mib"] = self.largest_free_block_bytes / MiB
        d["fragmentation"] = self.fragmentation
        return d


class DeviceMemory(abc.ABC):
    """The memory of one device: allocate and free opaque handles, read the allocator's stats."""

    simulated: bool = False
    capacity_bytes: int  # what this process can reserve on the device

    @abc.abstractmethod
    def allocate(self, nbytes: int) -> int:
        """Allocate ``nbytes``; returns a handle. Raises OutOfDeviceMemory when it does not fit."""

    @abc.abstractmethod
    def free(self, handle: int) -> None:
        """Free one allocation (the memory stays reserved in the cache)."""

    @abc.abstractmethod
    def stats(self) -> MemoryStats:
        """The allocator's counters now (read this BEFORE empty_cache)."""

    @abc.abstractmethod
    def empty_cache(self) -> None:
        """Give fully free cached segments back to the device."""

    @abc.abstractmethod
    def reset_peak(self) -> None:
        """Restart the peak counters from the current values."""

    def free_all(self, handles) -> None:
        """Free every handle of an iterable (in order)."""
        for h in handles:
            self.free(h)


# -- simulated caching allocator ------------------------------------------------------------


class _Segment:
    __slots__ = ("id", "size", "small", "blocks")

    def __init__(self, seg_id: int, size: int, small: bool) -> None:
        self.id = seg_id
        self.size = size
        self.small = small
        self.blocks: list[_Block] = []  # in offset order, covering the segment


class _Block:
    __slots__ = ("segment", "offset", "size", "allocated", "handle")

    def __init__(self, segment: _Segment, offset: int, size: int) -> None:
        self.segment = segment
        self.offset = offset
        self.size = size
        self.allocated = False
        self.handle = -1

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment.id, self.offset)


class SimulatedMemory(DeviceMemory):
    """A caching allocator over a simulated board's VRAM (see the module docstring for the rules).

    ``total_mib`` is the board's VRAM and ``base_mib`` what the driver and context hold at
    rest, so ``capacity_bytes = (total_mib - base_mib) MiB``: NVML's "used" is then
    ``base_mib + reserved``, exactly what ``ctx.set_load(level, vram_mib=reserved_mib)``
    declares to a simulated device.
    """

    simulated = True

    def __init__(self, total_mib: float, base_mib: float, block_granularity_mib: float = 2) -> None:
        if total_mib <= base_mib or base_mib < 0:
            raise ValueError(f"need 0 <= base_mib < total_mib, got base_mib={base_mib}, total_mib={total_mib}")
        if block_granularity_mib <= 0:
            raise ValueError(f"block_granularity_mib must be > 0, got {block_granularity_mib}")
        self.total_mib = float(total_mib)
        self.base_mib = float(base_mib)
        self.capacity_bytes = int((total_mib - base_mib) * MiB)
        self.granularity_bytes = int(block_granularity_mib * MiB)
        self._segments: dict[int, _Segment] = {}
        self._free_keys = {True: [], False: []}  # pool (small?) -> sorted (size, seg id, offset)
        self._free_blocks: dict[tuple[int, int, int], _Block] = {}
        self._live: dict[int, _Block] = {}
        self._ids = itertools.count(1)
        self._handles = itertools.count(1)
        self._allocated = 0
        self._reserved = 0
        self._peak_allocated = 0
        self._peak_reserved = 0
        self.num_ooms = 0
        self.num_alloc_retries = 0

    # -- sizing rules -------------------------------------------------------------------
    @staticmethod
    def round_size(nbytes: int) -> int:
        """A request rounded up to the allocator's 512-byte unit."""
        n = max(int(nbytes), 1)
        return -(-n // _MIN_BLOCK_BYTES) * _MIN_BLOCK_BYTES

    def segment_bytes(self, nbytes: int) -> int:
        """Bytes a new segment reserves for a request of ``nbytes`` that no cached block serves."""
        size = self.round_size(nbytes)
        if size <= _SMALL_SIZE_BYTES:
            return self.granularity_bytes
        if size < _MIN_LARGE_ALLOC_BYTES:
            return _LARGE_BUFFER_BYTES
        return -(-size // self.granularity_bytes) * self.granularity_bytes

    # -- allocation ---------------------------------------------------------------------
    def allocate(self, nbytes: int) -> int:
        """Allocate ``nbytes`` (best fit in the cache, else a new segment); returns a handle."""
        size = self.round_size(nbytes)
        small = size <= _SMALL_SIZE_BYTES
        block = self._best_fit(small, size)
        if block is None:
            seg_size = self.segment_bytes(size)
            if self._reserved + seg_size > self.capacity_bytes:
                # Like the CUDA allocator: give back fully free cached segments, then retry.
                self.num_alloc_retries += 1
                self._release_cached()
                if self._reserved + seg_size > self.capacity_bytes:
                    self.num_ooms += 1
                    raise OutOfDeviceMemory(self._oom_message(size))
            block = self._new_segment(seg_size, small)
        self._take(block, size)
        handle = next(self._handles)
        block.handle = handle
        self._live[handle] = block
        return handle

    def free(self, handle: int) -> None:
        """Free one allocation; the block coalesces with free neighbours of its segment."""
        block = self._live.pop(handle, None)
        if block is None:
            raise KeyError(f"unknown or already freed handle {handle}")
        block.allocated = False
        block.handle = -1
        self._allocated -= block.size
        seg = block.segment
        i = self._index_in_segment(block)
        if i + 1 < len(seg.blocks) and not seg.blocks[i + 1].allocated:
            nxt = seg.blocks.pop(i + 1)
            self._remove_free(nxt)
            block.size += nxt.size
        if i > 0 and not seg.blocks[i - 1].allocated:
            prev = seg.blocks[i - 1]
            self._remove_free(prev)
            prev.size += block.size
            seg.blocks.pop(i)
            block = prev
        self._insert_free(block)

    def empty_cache(self) -> None:
        """Release every segment whose only block is free (split segments stay)."""
        self._release_cached()

    def _release_cached(self) -> None:
        # Also the allocator's own retry path, so a caller's empty_cache calls stay countable.
        for seg in list(self._segments.values()):
            if len(seg.blocks) == 1 and not seg.blocks[0].allocated:
                self._remove_free(seg.blocks[0])
                del self._segments[seg.id]
                self._reserved -= seg.size

    def reset_peak(self) -> None:
        """Restart the peak counters from the current values."""
        self._peak_allocated = self._allocated
        self._peak_reserved = self._reserved

    # -- reading ------------------------------------------------------------------------
    @property
    def allocated_bytes(self) -> int:
        """Bytes in allocated blocks (rounded sizes, as the CUDA allocator counts them)."""
        return self._allocated

    @property
    def reserved_bytes(self) -> int:
        """Bytes in segments (allocated + cached)."""
        return self._reserved

    @property
    def inactive_split_bytes(self) -> int:
        """Free bytes inside segments that still hold other blocks (not releasable)."""
        return sum(b.size for b in self._free_blocks.values() if len(b.segment.blocks) > 1)

    @property
    def largest_free_block_bytes(self) -> int:
        """The largest cached free block (0 when the cache holds none)."""
        keys = self._free_keys[False]
        large = keys[-1][0] if keys else 0
        small_keys = self._free_keys[True]
        return max(large, small_keys[-1][0] if small_keys else 0)

    def largest_allocatable_bytes(self) -> int:
        """Analytic: the largest large-pool request that would succeed now."""
        releasable = sum(
            s.size for s in self._segments.values() if len(s.blocks) == 1 and not s.blocks[0].allocated
        )
        headroom = self.capacity_bytes - (self._reserved - releasable)
        fresh = (headroom // self.granularity_bytes) * self.granularity_bytes
        cached = self._free_keys[False][-1][0] if self._free_keys[False] else 0
        return max(fresh if fresh >= _MIN_LARGE_ALLOC_BYTES else 0, cached)

    def stats(self) -> MemoryStats:
        """The allocator's counters now."""
        split_free = [b.size for b in self._free_blocks.values() if len(b.segment.blocks) > 1]
        return MemoryStats(
            allocated_bytes=self._allocated,
            reserved_bytes=self._reserved,
            inactive_split_bytes=sum(split_free),
            inactive_split_blocks=len(split_free),
            largest_free_block_bytes=self.largest_free_block_bytes,
            peak_allocated_bytes=self._peak_allocated,
            peak_reserved_bytes=self._peak_reserved,
            num_ooms=self.num_ooms,
            num_alloc_retries=self.num_alloc_retries,
            segments=len(self._segments),
        )

    # -- internals ----------------------------------------------------------------------
    def _best_fit(self, small: bool, size: int) -> _Block | None:
        keys = self._free_keys[small]
        i = bisect.bisect_left(keys, (size, -1, -1))
        if i == len(keys):
            return None
        return self._free_blocks[keys[i]]

    def _new_segment(self, seg_size: int, small: bool) -> _Block:
        seg = _Segment(next(self._ids), seg_size, small)
        block = _Block(seg, 0, seg_size)
        seg.blocks.append(block)
        self._segments[seg.id] = seg
        self._reserved += seg_size
        self._peak_reserved = max(self._peak_reserved, self._reserved)
        self._insert_free(block)
        return block

    def _take(self, block: _Block, size: int) -> None:
        self._remove_free(block)
        rest = block.size - size
        min_rest = _MIN_BLOCK_BYTES if block.segment.small else _SMALL_SIZE_BYTES + 1
        if rest >= min_rest:
            tail = _Block(block.segment, block.offset + size, rest)
            block.size = size
            seg = block.segment
            seg.blocks.insert(self._index_in_segment(block) + 1, tail)
            self._insert_free(tail)
        block.allocated = True
        self._allocated += block.size
        self._peak_allocated = max(self._peak_allocated, self._allocated)

    @staticmethod
    def _index_in_segment(block: _Block) -> int:
        blocks = block.segment.blocks
        lo, hi = 0, len(blocks)
        while lo < hi:  # blocks are in offset order
            mid = (lo + hi) // 2
            if blocks[mid].offset < block.offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _insert_free(self, block: _Block) -> None:
        key = block.key
        bisect.insort(self._free_keys[block.segment.small], key)
        self._free_blocks[key] = block

    def _remove_free(self, block: _Block) -> None:
        key = block.key
        keys = self._free_keys[block.segment.small]
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            keys.pop(i)
            del self._free_blocks[key]

    def _oom_message(self, size: int) -> str:
        return (
            f"simulated device out of memory: tried to allocate {size / MiB:.2f} MiB; "
            f"capacity {self.capacity_bytes / MiB:.0f} MiB "
            f"({self.total_mib:.0f} MiB total, {self.base_mib:.0f} MiB base), "
            f"{self._reserved / MiB:.2f} MiB reserved, {self._allocated / MiB:.2f} MiB allocated, "
            f"{self.inactive_split_bytes / MiB:.2f} MiB free in split blocks"
        )


# -- CUDA adapter ---------------------------------------------------------------------------


@contextmanager
def translate_cuda_oom():
    """Turn ``torch.cuda.OutOfMemoryError`` raised inside the block into OutOfDeviceMemory.

    The CUDA error's traceback is dropped: its frames would keep the failed pass's tensors
    alive until the error object died, and the caller wants that memory back at once.
    torch is not imported here: a block that raised a torch error has imported it already
    (a simulated board's passes import it only when they run out of memory).
    """
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
            exc.__traceback__ = None
            raise OutOfDeviceMemory(_first_line(exc) or "CUDA out of memory") from None
        # cuBLAS/cuDNN workspace failures surface as plain RuntimeErrors.
        text = str(exc)
        if "out of memory" not in text.lower() and "ALLOC_FAILED" not in text:
            raise
        exc.__traceback__ = None
        raise OutOfDeviceMemory(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class CudaMemory(DeviceMemory):
    """:class:`DeviceMemory` over PyTorch's CUDA caching allocator (``torch.cuda.memory_stats``).

    Fragmentation uses ``inactive_split_bytes.all.current`` (bytes), not
    ``inactive_split.all.current`` (a block count), and must be read before
    ``empty_cache``.
    """

    simulated = False

    def __init__(self, torch_device: str = "cuda:0") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(torch_device)
        free_bytes, total_bytes = torch.cuda.mem_get_info(self.device)
        self.total_bytes = int(total_bytes)
        # What this process can reach: the device's free memory plus what its cache holds.
        self.capacity_bytes = int(free_bytes) + int(torch.cuda.memory_reserved(self.device))
        self._live: dict[int, object] = {}
        self._handles = itertools.count(1)

    def allocate(self, nbytes: int) -> int:
        """Allocate a ``uint8`` tensor of ``nbytes`` on the device; returns a handle."""
        with translate_cuda_oom():
            tensor = self._torch.empty(int(nbytes), dtype=self._torch.uint8, device=self.device)
        handle = next(self._handles)
        self._live[handle] = tensor
        return handle

    def free(self, handle: int) -> None:
        """Drop the tensor of ``handle`` (its block returns to PyTorch's cache)."""
        if self._live.pop(handle, None) is None:
            raise KeyError(f"unknown or already freed handle {handle}")

    def stats(self) -> MemoryStats:
        """Read torch.cuda.memory_stats() (and the largest cached free block from the snapshot)."""
        s = self._torch.cuda.memory_stats(self.device)
        return MemoryStats(
            allocated_bytes=int(s.get("allocated_bytes.all.current", 0)),
            reserved_bytes=int(s.get("reserved_bytes.all.current", 0)),
            inactive_split_bytes=int(s.get("inactive_split_bytes.all.current", 0)),
            inactive_split_blocks=int(s.get("inactive_split.all.current", 0)),
            largest_free_block_bytes=self._largest_free_block_bytes(),
            peak_allocated_bytes=int(s.get("allocated_bytes.all.peak", 0)),
            peak_reserved_bytes=int(s.get("reserved_bytes.all.peak", 0)),
            num_ooms=int(s.get("num_ooms", 0)),
            num_alloc_retries=int(s.get("num_alloc_retries", 0)),
            segments=int(s.get("segment.all.current", 0)),
        )

    def _largest_free_block_bytes(self) -> int:
        largest = 0
        index = self.device.index if self.device.index is not None else self._torch.cuda.current_device()
        for seg in self._torch.cuda.memory_snapshot():
            if seg.get("device", index) != index:
                continue
            for block in seg.get("blocks", ()):
                if block.get("state") == "inactive":
                    largest = max(largest, int(block.get("size", 0)))
        return largest

    def empty_cache(self) -> None:
        """torch.cuda.empty_cache()."""
        self._torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        """torch.cuda.reset_peak_memory_stats() for this device."""
        self._torch.cuda.reset_peak_memory_stats(self.device)

    def used_by_process_bytes(self) -> int:
        """Device memory in use by everyone (total - free), as NVML would count it."""
        free_bytes, total_bytes = self._torch.cuda.mem_get_info(self.device)
        return int(total_bytes) - int(free_bytes)


def probe_largest_allocatable_bytes(memory: DeviceMemory, hi_bytes: int, resolution_bytes: int = 2 * MiB) -> int:
    """The largest single allocation that succeeds now, by bisection of real attempts.

    Each successful attempt is freed at once. A failed attempt may make the allocator give
    back cached segments (both back ends do), so read the stats you need first.
    """
    lo, hi = 0, max(int(hi_bytes), resolution_bytes) + resolution_bytes
    while hi - lo > resolution_bytes:
        mid = (lo + hi) // 2
        mid -= mid % resolution_bytes
        if mid <= lo:
            break
        try:
            handle = memory.allocate(mid)
        except OutOfDeviceMemory:
            hi = mid
        else:
            memory.free(handle)
            lo = mid
    return lo


# -- activation model -----------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationModel:
    """Bytes a causal LM holds on the device: weights, KV cache and activation peaks.

    Notation: B batch, T context, L layers, E hidden size, H query heads, G key-value heads
    (GQA: G < H), D head_dim, I MLP width, V vocab, s dtype bytes. HF's DynamicCache keeps each
    layer's K and V as compact tensors, so the KV cache holds 2 L B G T D s
    (``kv_cache_bytes``; GPT-2: G D = E).

    The prefill of B x T tokens peaks in the last layer or in the LM head. Alive there: the
    input ids B T 8 and the KV cache; inside the decoder also the position ids T 8, the causal
    mask (eager only) B T^2 s, RoPE's cos and sin 2 T D s, the embedding output B T E s (GPT-2:
    and the position embedding T E s), and the layer's input B T E s, which its caller holds;
    plus the largest of three transients:

    * attention: norm output B T E s, then GPT-2's fused QKV 3 B T E s, or the queries B T H D s
      and, eager, K and V repeated to H heads 2 B T H D s (GQA); eager: the scores and the
      probabilities 2 B H T^2 s, plus HF's float32 softmax B H T^2 4 when s < 4 (rope
      families); SDPA instead: its output (GQA stays inside the kernel);
    * MLP: the post-attention residual and the norm output (GPT-2: and the attention output),
      eager: the attention weights the layer still holds B H T^2 s, and ``mlp_tensors`` tensors
      of B T I s (GPT-2's tanh GELU 4, SwiGLU 3);
    * LM head: the final norm output B T E s and the logits B T V s (the decoder's own tensors
      are gone by then).

    A sliding window (Mistral v0.1, Qwen2 with ``use_sliding_window``) costs SDPA a boolean
    T^2 mask; the prefill's cache still holds all T tokens (the window's K and V are views of
    them). Past the window, decode caches fewer tokens than modelled here (an upper bound).

    One decode step after T cached tokens (``decode_peak_tensors``) is the same with one new
    token over T + 1 keys, plus the cache update: a layer's old K and V beside the grown ones.
    ``tests/test_memory_ground_truth.py`` counts what real CPU passes of each family hold: the
    prefill within 1.5 %, the decode step within 2 % plus at most one layer's K.

    Weights are ``n_params * s``: token embedding V E, position table P E (GPT-2), per layer
    two norms (LayerNorm: weight and bias; RMSNorm: weight), Q H D E, K and V G D E each,
    O H D E, the MLP (GELU 2 E I, SwiGLU 3 E I), the family's biases, the final norm, and
    an LM head V E unless it is tied to the embedding. It is a model: on CUDA the runner
    records its prediction next to the measured peak (kernel workspaces and the allocator's
    rounding are not in it).
    """

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    n_positions: int
    n_inner: int | None = None
    dtype_bytes: int = 4
    kv_cache: bool = True
    attn_implementation: str = "eager"
    mlp_live_tensors: int | None = None  # None: by the MLP (see ``mlp_tensors``)
    n_kv_head: int | None = None  # None: n_head (no GQA)
    head_dim: int | None = None  # None: n_embd // n_head
    family: str = "gpt2"
    mlp: str = "gelu"  # "gelu" | "gated"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    position: str = "learned"  # "learned" | "rope"
    tie_word_embeddings: bool = True
    qkv_bias: bool = True
    o_bias: bool = True
    mlp_bias: bool = True
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be 'eager' or 'sdpa', got {self.attn_implementation!r}")
        if self.mlp not in ("gelu", "gated") or self.norm not in ("layernorm", "rmsnorm") \
                or self.position not in ("learned", "rope"):
            raise ValueError(f"unknown layout mlp={self.mlp!r} norm={self.norm!r} position={self.position!r}")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_kv_head ({self.kv_heads}) must divide n_head ({self.n_head})")

    @classmethod
    def from_dims(cls, dims: dict, dtype: str = "float32", **kw) -> "ActivationModel":
        """From a GPT-2 dims dict (n_layer, n_embd, n_head, vocab_size, n_positions[, n_inner]) and a dtype name."""
        keys = ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "n_inner")
        return cls(**{k: dims[k] for k in keys if k in dims}, dtype_bytes=DTYPE_BYTES[dtype], **kw)

    @classmethod
    def from_shape(cls, shape, dtype: str = "float32", **kw) -> "ActivationModel":
        """From a :class:`experiments.model_shapes.ModelShape` and a dtype name."""
        return cls(
            n_layer=shape.n_layer, n_embd=shape.hidden_size, n_head=shape.n_head, vocab_size=shape.vocab_size,
            n_positions=shape.n_positions, n_inner=shape.intermediate_size, dtype_bytes=DTYPE_BYTES[dtype],
            n_kv_head=shape.n_kv_head, head_dim=shape.head_dim, family=shape.family, mlp=shape.mlp, norm=shape.norm,
            position=shape.position, tie_word_embeddings=shape.tie_word_embeddings, qkv_bias=shape.qkv_bias,
            o_bias=shape.o_bias, mlp_bias=shape.mlp_bias, sliding_window=shape.sliding_window, **kw)

    @property
    def inner(self) -> int:
        """MLP width (4 n_embd unless set)."""
        return self.n_inner or 4 * self.n_embd

    @property
    def kv_heads(self) -> int:
        """Key-value heads (n_head without GQA)."""
        return self.n_kv_head or self.n_head

    @property
    def head_size(self) -> int:
        """Per-head width D."""
        return self.head_dim or self.n_embd // self.n_head

    @property
    def gqa_groups(self) -> int:
        """Query heads per key-value head (1 without GQA)."""
        return self.n_head // self.kv_heads

    # -- weights --------------------------------------------------------------------------
    def weight_elements(self) -> list[tuple[str, int]]:
        """(name, elements) of every parameter tensor, in load order."""
        e, i, v = self.n_embd, self.inner, self.vocab_size
        norm = (lambda n: [(f"{n}.weight", e), (f"{n}.bias", e)]) if self.norm == "layernorm" \
            else (lambda n: [(f"{n}.weight", e)])
        if self.family == "gpt2":
            out = [("wte", v * e)] + ([("wpe", self.n_positions * e)] if self.position == "learned" else [])
            for layer in range(self.n_layer):
                h = f"h{layer}"
                out += norm(f"{h}.ln_1") + [(f"{h}.attn.c_attn.weight", e * 3 * e), (f"{h}.attn.c_attn.bias", 3 * e),
                                             (f"{h}.attn.c_proj.weight", e * e), (f"{h}.attn.c_proj.bias", e)]
                out += norm(f"{h}.ln_2") + [(f"{h}.mlp.c_fc.weight", e * i), (f"{h}.mlp.c_fc.bias", i),
                                             (f"{h}.mlp.c_proj.weight", i * e), (f"{h}.mlp.c_proj.bias", e)]
            out += norm("ln_f")
        else:
            q, kv = self.n_head * self.head_size, self.kv_heads * self.head_size
            out = [("embed_tokens", v * e)]
            for layer in range(self.n_layer):
                a = f"layers.{layer}.self_attn"
                out += norm(f"layers.{layer}.input_layernorm")
                for proj, n_out, bias in (("q", q, self.qkv_bias), ("k", kv, self.qkv_bias), ("v", kv, self.qkv_bias)):
                    out += [(f"{a}.{proj}_proj.weight", e * n_out)] + ([(f"{a}.{proj}_proj.bias", n_out)] if bias else [])
                out += [(f"{a}.o_proj.weight", q * e)] + ([(f"{a}.o_proj.bias", e)] if self.o_bias else [])
                out += norm(f"layers.{layer}.post_attention_layernorm")
                m = f"layers.{layer}.mlp"
                projs = (("gate", e, i), ("up", e, i), ("down", i, e)) if self.mlp == "gated" \
                    else (("up", e, i), ("down", i, e))
                for proj, n_in, n_out in projs:
                    out += [(f"{m}.{proj}_proj.weight", n_in * n_out)]
                    out += [(f"{m}.{proj}_proj.bias", n_out)] if self.mlp_bias else []
            out += norm("norm")
        if not self.tie_word_embeddings:
            out.append(("lm_head.weight", v * e))
        return out

    def n_params(self) -> int:
        """Parameter count (the LM head counted once when tied to the token embedding)."""
        return sum(n for _, n in self.weight_elements())

    def weight_bytes(self) -> int:
        """Bytes of the weights."""
        return self.n_params() * self.dtype_bytes

    def weight_tensors(self) -> list[tuple[str, int]]:
        """(name, bytes) of every parameter tensor, in load order."""
        return [(name, n * self.dtype_bytes) for name, n in self.weight_elements()]

    def kv_cache_bytes_per_token(self) -> int:
        """KV cache bytes per token of one sequence: 2 L G D s (0 without a cache)."""
        return 2 * self.n_layer * self.kv_heads * self.head_size * self.dtype_bytes if self.kv_cache else 0

    def kv_cache_bytes(self, batch_size: int, context: int) -> int:
        """Bytes of the KV cache for ``batch_size`` sequences of ``context`` tokens."""
        return int(batch_size) * int(context) * self.kv_cache_bytes_per_token()

    def figures(self) -> dict:
        """The model's memory figures for a report: layout, dimensions, parameters, weight and KV bytes."""
        return {
            "family": self.family, "n_layer": self.n_layer, "hidden_size": self.n_embd, "n_head": self.n_head,
            "n_kv_head": self.kv_heads, "head_dim": self.head_size, "intermediate_size": self.inner,
            "vocab_size": self.vocab_size, "mlp": self.mlp, "position": self.position,
            "tie_word_embeddings": self.tie_word_embeddings, "sliding_window": self.sliding_window,
            "dtype_bytes": self.dtype_bytes,
            "n_params": self.n_params(), "weight_bytes": self.weight_bytes(),
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token(),
        }

    # -- prefill --------------------------------------------------------------------------
    def _scores(self, b: int, t_q: int, t_k: int) -> list[tuple[str, int]]:
        """The eager attention's score tensors alive at once (queries t_q x keys t_k)."""
        s, n = self.dtype_bytes, b * self.n_head * t_q * t_k
        if self.family == "gpt2":
            return [("attn.scores", n * s), ("attn.probs", n * s)]
        out = [("attn.scores", n * s), ("attn.probs", n * s)]
        return out + ([("attn.softmax_fp32", n * 4)] if s < 4 else [])

    def _transients(self, b: int, t: int, t_k: int | None = None) -> dict[str, list[tuple[str, int]]]:
        """The three transients of a pass of ``t`` new tokens over ``t_k`` keys (prefill: t_k = t)."""
        t_k = t if t_k is None else t_k
        s, e = self.dtype_bytes, self.n_embd
        bte = b * t * e * s
        eager = self.attn_implementation == "eager"
        # HF's decoders keep the embedding output (GPT-2: and the position embedding) alive
        # through every layer, and the caller holds each layer's input while it runs.
        embeddings = [("embeddings", bte)] + ([("position_embeddings", t * e * s)] if self.position == "learned" else [])
        if self.family == "gpt2":
            attn = embeddings + [("attn.ln_1", bte)]
            attn.append(("attn.qkv", 3 * bte))
            attn += self._scores(b, t, t_k) if eager else [("attn.sdpa_out", bte), ("attn.merged", bte)]
            # the block keeps its attention output beside the new residual
            mlp = embeddings + [("attn.output", bte), ("residual.attn_out", bte), ("mlp.ln_2", bte)]
        else:
            q = b * t * self.n_head * self.head_size * s
            attn = embeddings + [("attn.norm", bte), ("attn.q", q)]
            if eager:
                rep = b * t_k * self.n_head * self.head_size * s
                attn += [("attn.k_repeated", rep), ("attn.v_repeated", rep)] if self.gqa_groups > 1 else []
                attn += self._scores(b, t, t_k)
            else:
                attn.append(("attn.sdpa_out", q))
            mlp = embeddings + [("residual.attn_out", bte), ("mlp.norm", bte)]
        if eager:  # the layer holds the attention weights it returned (``_``) until it returns
            mlp.append(("attn.probs_held", b * self.n_head * t * t_k * s))
        mlp += [(f"mlp.act{k}", b * t * self.inner * s) for k in range(self.mlp_tensors)]
        head = [("head.norm", bte), ("head.logits", b * t * self.vocab_size * s)]
        return {"attention": attn, "mlp": mlp, "lm_head": head}

    @property
    def mlp_tensors(self) -> int:
        """Tensors of B T I alive at the MLP's peak: GPT-2's tanh GELU 4 (fc output, 0.5 x and two
        temporaries of its polynomial), SwiGLU 3 (act(gate), up, their product)."""
        if self.mlp_live_tensors is not None:
            return int(self.mlp_live_tensors)
        return 4 if self.mlp == "gelu" else 3

    @staticmethod
    def _residual(where: str, bte: int) -> list[tuple[str, int]]:
        """The layer's input, held by its caller beside the attention or the MLP (gone by the LM head)."""
        return [] if where == "lm_head" else [("residual.in", bte)]

    def _live(self, b: int, t: int, t_cache: int, where: str) -> list[tuple[str, int]]:
        """Tensors alive beside the transient ``where``: the ids and the KV cache of t_cache tokens,
        and inside the decoder (gone by the LM head) the mask, position ids and RoPE tables."""
        s = self.dtype_bytes
        live = [("input_ids", b * t * 8)]
        if where != "lm_head":
            if self.attn_implementation == "eager":
                live.append(("causal_mask", b * t * t_cache * s))
            elif self.sliding_window is not None:
                live.append(("sliding_mask", t * t_cache))  # SDPA gets a boolean mask for the window
            live.append(("position_ids", t * 8))
            if self.position == "rope":
                live += [("rope.cos", t * self.head_size * s), ("rope.sin", t * self.head_size * s)]
        if self.kv_cache:
            per = b * t_cache * self.kv_heads * self.head_size * s
            for layer in range(self.n_layer):
                live += [(f"kv.{layer}.k", per), (f"kv.{layer}.v", per)]
        return live

    def peak_tensors(self, batch_size: int, context: int) -> list[tuple[str, int]]:
        """(name, bytes) of the tensors alive at the prefill's peak (weights excluded)."""
        b, t = int(batch_size), int(context)
        bte = b * t * self.n_embd * self.dtype_bytes
        where = self.peak_component(b, t)
        return self._live(b, t, t, where) + self._residual(where, bte) + self._transients(b, t)[where]

    def peak_component(self, batch_size: int, context: int) -> str:
        """Which transient sets the prefill's peak: 'attention', 'mlp' or 'lm_head'."""
        b, t = int(batch_size), int(context)
        bte = b * t * self.n_embd * self.dtype_bytes
        totals = {k: sum(n for _, n in v + self._residual(k, bte) + self._live(b, t, t, k))
                  for k, v in self._transients(b, t).items()}
        return max(totals, key=totals.get)

    def peak_bytes(self, batch_size: int, context: int) -> int:
        """Bytes alive at the peak of the prefill, weights excluded."""
        return sum(n for _, n in self.peak_tensors(batch_size, context))

    # -- decode ---------------------------------------------------------------------------
    def decode_peak_tensors(self, batch_size: int, context: int) -> list[tuple[str, int]]:
        """(name, bytes) alive at the peak of one decode step after ``context`` cached tokens (weights excluded)."""
        b, t, s = int(batch_size), int(context), self.dtype_bytes
        be = b * self.n_embd * s
        transients = self._transients(b, 1, t + 1)
        if self.kv_cache:
            # torch.cat builds one layer's grown K and V while the old ones live: Mistral holds
            # both old tensors then, Llama has dropped the old K (both charged: at most one
            # layer's K too much).
            old = b * t * self.kv_heads * self.head_size * s
            q = b * self.n_head * self.head_size * s
            inputs = [x for x in transients["attention"]
                      if x[0] in ("embeddings", "position_embeddings", "attn.norm", "attn.ln_1")]
            transients["cache_update"] = inputs + [("attn.q", q), ("kv.cat_old_k", old), ("kv.cat_old_v", old)]
        totals = [self._live(b, 1, t + 1, k) + self._residual(k, be) + v for k, v in transients.items()]
        return max(totals, key=lambda xs: sum(n for _, n in xs))

    def decode_peak_bytes(self, batch_size: int, context: int) -> int:
        """Bytes alive at the peak of one decode step after ``context`` cached tokens, weights excluded."""
        return sum(n for _, n in self.decode_peak_tensors(batch_size, context))

    def serve_peak_bytes(self, batch_size: int, input_tokens: int, output_tokens: int) -> int:
        """The larger of the prefill's peak and the last decode step's, weights excluded."""
        last = int(input_tokens) + max(int(output_tokens) - 1, 0)
        return max(self.peak_bytes(batch_size, input_tokens), self.decode_peak_bytes(batch_size, last))

    # -- the cliff ------------------------------------------------------------------------
    def max_context(
        self, batch_size: int, budget_bytes: int, limit: int | None = None, segment_bytes=None
    ) -> int:
        """The largest context (tokens, 0..limit) whose prefill peak fits in ``budget_bytes``.

        ``budget_bytes`` is what is left for the pass once the weights are loaded. With
        ``segment_bytes`` (e.g. :meth:`SimulatedMemory.segment_bytes`) every peak tensor is
        charged the segment a fresh allocation of it reserves, which is what the simulated
        allocator enforces after ``empty_cache``; without it, raw bytes. Exact (bisection
        over integers; the peak grows with the context).
        """
        limit = self.n_positions if limit is None else int(limit)

        def need(t: int) -> int:
            if segment_bytes is None:
                return self.peak_bytes(batch_size, t)
            return sum(segment_bytes(n) for _, n in self.peak_tensors(batch_size, t))

        if need(1) > budget_bytes:
            return 0
        lo, hi = 1, limit
        if need(hi) <= budget_bytes:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= budget_bytes:
                lo = mid
            else:
                hi = mid
        return lo

    def approx_max_context(self, batch_size: int, budget_bytes: int) -> int:
        """Estimate of :meth:`max_context` for sizing searches: the peak is a piecewise
        quadratic in T; fit a quadratic through 0, t and 2t and solve, three times."""
        b = int(batch_size)
        t = max(1.0, budget_bytes / max(self.peak_bytes(b, 1), 1))
        for _ in range(3):
            ti = max(1, int(t))
            p1, p2 = self.peak_bytes(b, ti), self.peak_bytes(b, 2 * ti)
            quad = (p2 - 2 * p1) / (2 * ti * ti)
            lin = (p1 - quad * ti * ti) / ti
            t = budget_bytes / lin if quad <= 0 else (-lin + math.sqrt(lin * lin + 4 * quad * budget_bytes)) / (2 * quad)
        return int(t)
