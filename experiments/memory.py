"""Device memory: a caching-allocator model for simulated devices, an adapter for CUDA.

Both back ends implement :class:`DeviceMemory` (allocate/free opaque handles, read
:class:`MemoryStats`, ``empty_cache``), so the VRAM cliff experiment runs the same code on
a simulated board and on a real GPU. Both raise :class:`agents.errors.OutOfDeviceMemory`
when an allocation does not fit.

:class:`SimulatedMemory` follows the rules of PyTorch's CUDA caching allocator closely
enough that fragmentation is real: requests are rounded to 512 B; requests of at most
1 MiB come from a small pool of 2 MiB segments; larger requests under 10 MiB get a 20 MiB
segment; requests of 10 MiB and more get a segment of their size rounded up to
``block_granularity_mb``. A free block is found best-fit and split when the rest is large
enough (512 B in the small pool, over 1 MiB in the large one); a freed block coalesces
with free neighbours of its own segment only. A free block inside a segment that still
holds other blocks is an *inactive split* block: memory that is reserved, not allocated,
and that ``empty_cache`` cannot give back. When a new segment does not fit, the allocator
first releases every fully free cached segment and retries, then raises.

:class:`ActivationModel` answers how many bytes a GPT-2 forward pass (prefill) holds at
its peak, as a function of batch, context, layers, width, heads, dtype and KV cache; on a
simulated device the VRAM cliff search allocates exactly those tensors, so the cliff lies
at a point computable from the model (:meth:`ActivationModel.max_context`).

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
        d["allocated_mb"] = self.allocated_bytes / MiB
        d["reserved_mb"] = self.reserved_bytes / MiB
        d["inactive_split_mb"] = self.inactive_split_bytes / MiB
        d["largest_free_block_mb"] = self.largest_free_block_bytes / MiB
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

    ``total_mb`` is the board's VRAM and ``base_mb`` what the driver and context hold at
    rest, so ``capacity_bytes = (total_mb - base_mb) MiB``: NVML's "used" is then
    ``base_mb + reserved``, exactly what ``ctx.set_load(level, vram_mb=reserved_mb)``
    declares to a simulated device.
    """

    simulated = True

    def __init__(self, total_mb: float, base_mb: float, block_granularity_mb: float = 2) -> None:
        if total_mb <= base_mb or base_mb < 0:
            raise ValueError(f"need 0 <= base_mb < total_mb, got base_mb={base_mb}, total_mb={total_mb}")
        if block_granularity_mb <= 0:
            raise ValueError(f"block_granularity_mb must be > 0, got {block_granularity_mb}")
        self.total_mb = float(total_mb)
        self.base_mb = float(base_mb)
        self.capacity_bytes = int((total_mb - base_mb) * MiB)
        self.granularity_bytes = int(block_granularity_mb * MiB)
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
            f"({self.total_mb:.0f} MiB total, {self.base_mb:.0f} MiB base), "
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
    """Bytes held by a GPT-2 forward pass (prefill of ``batch x context`` tokens) at its peak.

    Notation: B batch, T context, L layers, E n_embd, H heads, I = n_inner (4E), V vocab,
    s dtype bytes. The peak is reached with the KV cache complete (the last layer, or the
    LM head), so the live tensors there are

    * KV cache (``kv_cache``): 2 L tensors of B T E s (HF concatenates into new tensors);
    * causal mask (eager attention only): B T^2 s;
    * residual stream: 2 B T E s (block input and output);
    * plus the largest of three transients:

      - attention: ln output B T E s, QKV projection 3 B T E s and, for eager attention, the
        scores and their softmax 2 B H T^2 s (SDPA instead: its output B T E s);
      - MLP: ln output B T E s and ``mlp_live_tensors`` tensors of B T I s (the fc output
        and the GELU temporaries);
      - LM head (replacing one residual tensor): ln_f output B T E s and logits B T V s;

    plus the input ids, B T 8. Weights are ``n_params * s``, loaded before any probe.
    It is a model: on CUDA the runner records its prediction next to the measured peak.
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
    mlp_live_tensors: int = 3

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be 'eager' or 'sdpa', got {self.attn_implementation!r}")

    @classmethod
    def from_dims(cls, dims: dict, dtype: str = "float32", **kw) -> "ActivationModel":
        """From a dims dict (n_layer, n_embd, n_head, vocab_size, n_positions[, n_inner]) and a dtype name."""
        keys = ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "n_inner")
        return cls(**{k: dims[k] for k in keys if k in dims}, dtype_bytes=DTYPE_BYTES[dtype], **kw)

    @property
    def inner(self) -> int:
        """MLP width (4 n_embd unless set)."""
        return self.n_inner or 4 * self.n_embd

    def n_params(self) -> int:
        """Parameter count (LM head tied to the token embedding, as in GPT-2)."""
        e, i = self.n_embd, self.inner
        per_layer = 4 * e * e + 2 * e * i + i + 9 * e
        return self.vocab_size * e + self.n_positions * e + self.n_layer * per_layer + 2 * e

    def weight_bytes(self) -> int:
        """Bytes of the weights."""
        return self.n_params() * self.dtype_bytes

    def weight_tensors(self) -> list[tuple[str, int]]:
        """(name, bytes) of every parameter tensor, in load order."""
        s, e, i = self.dtype_bytes, self.n_embd, self.inner
        out = [("wte", self.vocab_size * e * s), ("wpe", self.n_positions * e * s)]
        for layer in range(self.n_layer):
            out += [
                (f"h{layer}.ln_1.weight", e * s), (f"h{layer}.ln_1.bias", e * s),
                (f"h{layer}.attn.c_attn.weight", e * 3 * e * s), (f"h{layer}.attn.c_attn.bias", 3 * e * s),
                (f"h{layer}.attn.c_proj.weight", e * e * s), (f"h{layer}.attn.c_proj.bias", e * s),
                (f"h{layer}.ln_2.weight", e * s), (f"h{layer}.ln_2.bias", e * s),
                (f"h{layer}.mlp.c_fc.weight", e * i * s), (f"h{layer}.mlp.c_fc.bias", i * s),
                (f"h{layer}.mlp.c_proj.weight", i * e * s), (f"h{layer}.mlp.c_proj.bias", e * s),
            ]  # fmt: skip
        out += [("ln_f.weight", e * s), ("ln_f.bias", e * s)]
        return out

    def _transients(self, b: int, t: int) -> dict[str, list[tuple[str, int]]]:
        s, e, h = self.dtype_bytes, self.n_embd, self.n_head
        bte = b * t * e * s
        if self.attn_implementation == "eager":
            scores = b * h * t * t * s
            attn = [("attn.ln_1", bte), ("attn.qkv", 3 * bte), ("attn.scores", scores), ("attn.probs", scores)]
        else:
            attn = [("attn.ln_1", bte), ("attn.qkv", 3 * bte), ("attn.sdpa_out", bte)]
        mlp = [("mlp.ln_2", bte)] + [(f"mlp.act{k}", b * t * self.inner * s) for k in range(self.mlp_live_tensors)]
        head = [("head.ln_f", bte), ("head.logits", b * t * self.vocab_size * s)]
        return {"attention": attn, "mlp": mlp, "lm_head": head}

    def peak_tensors(self, batch_size: int, context: int) -> list[tuple[str, int]]:
        """(name, bytes) of the tensors alive at the pass's peak (weights excluded)."""
        b, t, s, e = int(batch_size), int(context), self.dtype_bytes, self.n_embd
        bte = b * t * e * s
        live = [("input_ids", b * t * 8)]
        if self.attn_implementation == "eager":
            live.append(("causal_mask", b * t * t * s))
        if self.kv_cache:
            for layer in range(self.n_layer):
                live += [(f"kv.{layer}.k", bte), (f"kv.{layer}.v", bte)]
        where = self.peak_component(b, t)
        residual = [("residual.in", bte)] + ([] if where == "lm_head" else [("residual.out", bte)])
        return live + residual + self._transients(b, t)[where]

    def peak_component(self, batch_size: int, context: int) -> str:
        """Which transient sets the peak: 'attention', 'mlp' or 'lm_head'."""
        b, t = int(batch_size), int(context)
        bte = b * t * self.n_embd * self.dtype_bytes
        totals = {k: sum(n for _, n in v) + (bte if k != "lm_head" else 0) for k, v in self._transients(b, t).items()}
        return max(totals, key=totals.get)

    def peak_bytes(self, batch_size: int, context: int) -> int:
        """Bytes alive at the peak of the pass, weights excluded."""
        return sum(n for _, n in self.peak_tensors(batch_size, context))

    def kv_cache_bytes(self, batch_size: int, context: int) -> int:
        """Bytes of the KV cache for ``batch_size`` sequences of ``context`` tokens."""
        return 2 * self.n_layer * batch_size * context * self.n_embd * self.dtype_bytes if self.kv_cache else 0

    def max_context(
        self, batch_size: int, budget_bytes: int, limit: int | None = None, segment_bytes=None
    ) -> int:
        """The largest context (tokens, 0..limit) whose peak fits in ``budget_bytes``.

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
        """Closed-form estimate of :meth:`max_context` (quadratic in T), for sizing searches."""
        b, s, e, h = batch_size, self.dtype_bytes, self.n_embd, self.n_head
        quad = b * s * ((2 * h + 1) if self.attn_implementation == "eager" else 0)
        lin = b * (8 + s * (2 * self.n_layer * e * int(self.kv_cache) + 2 * e + max(4 * e, e + self.vocab_size)))
        if quad == 0:
            return int(budget_bytes // max(lin, 1))
        return int((-lin + math.sqrt(lin * lin + 4 * quad * budget_bytes)) / (2 * quad))
