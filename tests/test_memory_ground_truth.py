"""The activation model against what a real forward pass holds, on the CPU.

A dispatch mode counts the bytes of every tensor storage the pass creates (weights excluded)
and frees them as their last tensor dies: the peak is what a caching allocator's
``allocated_bytes`` would reach, without its rounding and without kernels' private
workspaces. Tiny configs of each family, both dtypes, eager and SDPA attention, regimes where
the attention scores, the MLP or the logits set the peak.
"""

from __future__ import annotations

import os
import weakref

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from experiments import model_shapes, workload
from experiments.memory import ActivationModel
from tiers import fast_subset


class LiveBytes(TorchDispatchMode):
    """Current and peak bytes of the storages created under the mode (``exclude``: already there)."""

    def __init__(self, exclude=()):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = self.peak = 0
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}

    def _drop(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.size.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage().data_ptr()
            if key == 0 or key in self.exclude:
                continue
            if key not in self.refs:
                self.refs[key], self.size[key] = 0, t.untyped_storage().nbytes()
                self.current += self.size[key]
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(t, self._drop, key)
        return out


def _shape(name: str, big_vocab: bool):
    if name == "mistral-v0.1":  # a sliding window of 64 tokens
        return model_shapes.from_config({**model_shapes.resolve("mistral-7b").tiny().config, "sliding_window": 64})
    shape = model_shapes.resolve(name).tiny()
    return model_shapes.from_config({**shape.config, "vocab_size": 20000}, "big vocab") if big_vocab else shape


CASES = [(name, attn, big) for name in ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "gpt2")
         for attn in ("eager", "sdpa") for big in (False, True)] + [("mistral-v0.1", "sdpa", False)]


# gpt2's real pass costs ~2.6 s of CPU a case: the fast tier keeps the other families (every
# attention and vocabulary case), make test all of them
@pytest.mark.parametrize("name, attn, big_vocab", fast_subset(CASES[:12] + CASES[-1:] + CASES[12:-1], keep=13))
def test_prefill_and_decode_peaks_match_a_real_pass(name, attn, big_vocab):
    shape = _shape(name, big_vocab)
    components = set()
    for dtype in (("float32",) if big_vocab else ("bfloat16",)):
        model = workload.build_model(shape, dtype=dtype, attn_implementation=attn)
        act = ActivationModel.from_shape(shape, dtype, attn_implementation=attn)
        keyword = workload._cache_keyword(model)
        for batch, context in ((2, 16), (1, 512)):
            ids = workload.synthetic_batch(batch, context, shape.vocab_size, seed=0)
            with torch.inference_mode():
                mode = LiveBytes(exclude=list(model.parameters()) + list(model.buffers()) + [ids])
                with mode:
                    out = model(input_ids=ids.clone(), use_cache=True)
                    prefill_peak = mode.peak
                    cache, nxt = workload._cache_of(out), out.logits[:, -1:, :].argmax(-1)
                    del out
                    # one decode step: what it adds beyond what was alive before, plus the cache
                    before, mode.peak = mode.current, mode.current
                    model(input_ids=nxt, use_cache=True, **{keyword: cache})
                    decode_peak = mode.peak - before + act.kv_cache_bytes(batch, context)
            components.add(act.peak_component(batch, context))
            label = f"{dtype} b{batch} t{context} {act.peak_component(batch, context)}"
            assert act.peak_bytes(batch, context) == pytest.approx(prefill_peak, rel=0.015), label
            # decode: never under; over by at most one layer's old K (see decode_peak_tensors), + 2%
            one_layer_k = batch * context * shape.n_kv_head * shape.head_dim * act.dtype_bytes
            upper = decode_peak * 1.02 + one_layer_k
            if shape.sliding_window is not None and context >= shape.sliding_window:
                upper = float("inf")  # past the window decode caches fewer tokens: the model is a bound
            assert decode_peak * 0.98 <= act.decode_peak_bytes(batch, context) <= upper, label
    # the cases cover the regimes they are meant to
    assert ("lm_head" in components) == big_vocab
    if attn == "eager" and not big_vocab:
        assert components == {"mlp", "attention"}
