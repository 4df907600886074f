"""The decode step generation runs when nothing observes the model: one new token per row, no hook machinery.

`generate` decodes through `DecodeStep` whenever it can (`DecodeStep.for_model` says when: no hook attached
anywhere, eval mode, every weight on one device, no accelerate dispatch, no flash-attn backend); otherwise it
runs the full hooked forward, token for token the same. The step follows gpt-fast's recipe in eager mode:

- the KV cache is preallocated for the whole generation (`KVCache.reserve`) and written in place;
- the key-padding mask is one `[batch, prompt + new]` buffer filled up front; a step passes a view of it;
- positions advance by one per step (no cumulative sum over the mask), activations are `[batch, d]`;
- on the CPU, projections with large weights call oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`): with
  cache-cold Pythia-160m weights on one thread here, a decode step's products took 22 ms against 30 ms through
  `F.linear` (MKL) at batch 1, and 37 against 61 ms at batch 8 (decoding is a stream of matrix-vector
  products); on two free cores, 17 against 35 ms at batch 1. It rounds differently from `F.linear` (~1e-6
  relative), so decoded logits are not bit-identical to a full forward's; the tokens are the same (tests
  compare them with transformers' `generate`). Small weights stay on `F.linear` (`ONEDNN_MIN_ELEMENTS`);
- on the CPU, attention is written out (`torch.matmul` and softmax, the eager backend's operations) whatever the
  model's backend, unless the step is small work that always runs on one thread (`workbench.threads`): torch's
  CPU sdpa kernel gave other bits on two threads than on one (~1e-7).

Threads: neither the products nor the written-out attention of a decode step split a sum between threads (each
thread computes whole outputs of a matrix-vector product, whole heads), so the step's choice of kernels and its
logits don't depend on the thread count: `same_bits_on_threads` checks this once per shape, batch and count by
running a step both ways, and where it holds, `generate` lets the decode steps' count follow the machine's load
(`workbench.threads`) for a model of any width. On a quiet 2-core machine two threads then halved a Pythia-160m
batch-1 step's products' time; beside a busy process the count drops to one (on two contended cores, oneDNN's
one-row products had been 4-10x slower than MKL's, which is why a count fixed at two once kept them on MKL).

`torch.compile` of the step was measured here and is not used: on the demo model the compiled step took
0.5-0.7 ms against 1.3-1.5 ms eager, but compiling took 15 s (91 s with a cold inductor cache), far longer
than a whole generation; on the Pythia-160m shape inductor failed to lower the oneDNN linear (InductorError),
so no compiled figure exists there (its step is ~75% matrix products by torch.profiler, which compiling the
rest cannot remove).

Shapes: b batch, k keys (cached + new), h heads, dh head size, d hidden size, v vocabulary.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from .attention import attention_probs
from .hook_points import has_module_hooks
from .kv_cache import KVCache
from .rotary import apply_rotary, rotary_tables
from .threads import is_small_work

Linear = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# oneDNN's fixed cost per call (~50 us here) outweighs its faster streaming for weights that stay in cache:
# only weights of more than 512 K elements (2 MB in fp32; Pythia-160m's 768 x 768 and up) go through it.
ONEDNN_MIN_ELEMENTS = 2**19
# Decode steps of at most this many rows are probed for thread invariance (`same_bits_on_threads`); larger
# batches keep a thread count fixed by the work.
INVARIANT_MAX_BATCH = 16
PROBE_KEYS = 40  # cached keys of the probe step (on 2 threads here, steps over 8 to 3,000 keys all gave equal bits)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`x @ weight.T + bias` by oneDNN; x `[b, in]`, weight `[out, in]` (an ordinary strided tensor)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.lru_cache(maxsize=None)
def onednn_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's linear runs here (CPU, fp32/bf16, a torch built with mkldnn) and agrees with `F.linear`
    on a probe (run once per device and dtype)."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=gen).to(dtype) for s in ((3, 40), (24, 40), (24,)))
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2
        return torch.allclose(_onednn_linear(x, w, b).float(), F.linear(x, w, b).float(), atol=tolerance, rtol=tolerance)
    except (AttributeError, RuntimeError, NotImplementedError):  # op missing or unsupported on this CPU
        return False


def linear_for(weight: torch.Tensor, onednn: bool) -> Linear:
    """The matrix product for `weight`: oneDNN's for a large weight where it works, else `F.linear`."""
    return _onednn_linear if onednn and weight.numel() > ONEDNN_MIN_ELEMENTS else F.linear


class _Proj:
    """One projection of the plan: its weight `[out, in]`, bias `[out]` or None, and the product to use."""

    __slots__ = ("weight", "bias", "linear")

    def __init__(self, module: torch.nn.Linear, onednn: bool) -> None:
        self.weight, self.bias = module.weight, module.bias
        self.linear = linear_for(module.weight, onednn)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x, self.weight, self.bias)


class _LN:
    """One LayerNorm of the plan, called as `F.layer_norm` (the kernel the model's LayerNorm runs unobserved)."""

    __slots__ = ("shape", "weight", "bias", "eps")

    def __init__(self, module: torch.nn.LayerNorm) -> None:
        self.shape, self.weight, self.bias, self.eps = module.normalized_shape, module.weight, module.bias, module.eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class DecodeStep:
    """Next-token logits for one new token per row, from a `KVCache` the prefill filled.

    The modules' tensors and chosen products are looked up once (a plan per layer), so a step is the tensor
    operations and little else.

    Args:
        model: a `GPTNeoXForCausalLM` that nothing observes (see `for_model`).
        onednn: use oneDNN's linear for large weights (`onednn_works`).
        explicit_attention: attention as `torch.matmul` and softmax (the eager backend's operations) even for an
            sdpa model: the same bits on any CPU thread count (`for_model` asks for it on the CPU).
    """

    def __init__(self, model, onednn: bool, explicit_attention: bool = False) -> None:
        base, config = model.gpt_neox, model.config
        self.config, self.embed = config, base.embed_in
        self.eager = explicit_attention or config.attn_implementation == "eager"
        self.heads, self.head_size = config.num_attention_heads, config.head_size
        self.scale = base.layers[0].attention.scale
        self.layers = [(i, layer.use_parallel_residual, _LN(layer.input_layernorm),
                        _Proj(layer.attention.query_key_value, onednn), _Proj(layer.attention.dense, onednn),
                        _LN(layer.post_attention_layernorm), _Proj(layer.mlp.dense_h_to_4h, onednn), layer.mlp.act,
                        _Proj(layer.mlp.dense_4h_to_h, onednn)) for i, layer in enumerate(base.layers)]
        self.final_ln, self.unembed = _LN(base.final_layer_norm), _Proj(model.embed_out, onednn)

    @classmethod
    def for_model(cls, model, batch: int) -> "DecodeStep | None":
        """A step for `model` decoding `batch` rows, or None when the full hooked forward must run: a hook
        attached to any hook point (so hooks see every step), training mode (dropout), weights spread over
        devices or offloaded (accelerate's hooks move them), or the flash_attention_2 backend (CUDA kernels of
        its own). oneDNN's products are used where `onednn_works`, attention written out on the CPU for work
        that may run on several threads (see the module's docstring): the same kernels on any thread count."""
        if model.training or model.config.attn_implementation == "flash_attention_2":
            return None
        # One pass over the modules: hook points with hooks (HookPoint.is_active), any other module's hooks.
        if any(has_module_hooks(m) for m in model.modules()):
            return None
        params = list(model.parameters())
        devices, dtypes = {p.device for p in params}, {p.dtype for p in params}
        if len(devices) != 1 or next(iter(devices)).type == "meta" or len(dtypes) != 1:
            return None
        device = params[0].device
        # attention written out where the steps may run on several threads (sdpa's bits depend on the count);
        # small work always runs on one thread, where sdpa's single kernel is faster (the demo: 25 against 31
        # ms for 20 tokens here). A function of the model and the batch only, never of the thread setting.
        several = device.type == "cpu" and not is_small_work(model.config.hidden_size, batch)
        return cls(model, onednn_works(device, params[0].dtype), explicit_attention=several)

    def signature(self) -> tuple:
        """What a step's kernels depend on: the shapes, dtype and device of every weight, the products chosen and
        the attention backend (not the weights' values)."""
        projections = [p for plan in self.layers for p in (plan[3], plan[4], plan[6], plan[8])] + [self.unembed]
        w = self.unembed.weight
        kinds = sorted({(tuple(p.weight.shape), p.bias is not None, p.linear is _onednn_linear) for p in projections})
        return (self.eager, self.config.num_hidden_layers, self.heads, self.head_size, w.dtype, w.device.type, *kinds)

    @torch.no_grad()
    def __call__(self, token: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                 key_mask: torch.Tensor | None) -> torch.Tensor:
        """Args:
            token: `[b]` ids of the newest token of each row.
            positions: `[b]` their rotary positions.
            cache: the KV cache of every earlier position (`cache.length` of them); extended by this token.
            key_mask: `[b, k]` bool, True for real (unpadded) keys, the new one included; None: no padding.

        Returns:
            logits `[b, v]` in fp32.
        """
        cos, sin = rotary_tables(self.config, positions[:, None])  # each [b, 1, 1, rotary_ndims]
        x = self.embed(token)  # [b, d]
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [b, 1, 1, k]
        for plan in self.layers:
            x = self._layer(plan, x, cos, sin, cache, mask)
        return self.unembed(self.final_ln(x)).float()

    def _layer(self, plan: tuple, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache,
               mask: torch.Tensor | None) -> torch.Tensor:
        """One block on `x` `[b, d]`: the same operations, in the same order, as `GPTNeoXLayer.forward`."""
        i, parallel, ln1, qkv_proj, dense, ln2, h_to_4h, act, h4_to_h = plan
        b, h, dh = x.shape[0], self.heads, self.head_size
        qkv = qkv_proj(ln1(x)).view(b, h, 3, dh)  # heads interleave q|k|v
        qk = apply_rotary(qkv[:, :, :2], cos, sin)  # [b, h, 2, dh]: q and k rotated in one pass (elementwise)
        keys, values = cache.update(i, qk[:, :, 1:], qkv[:, :, 2:])  # [b, h, k, dh]
        q = qk[:, :, :1]  # [b, h, 1, dh]
        if self.eager:
            scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale)
            if mask is not None:
                scores = scores.masked_fill_(~mask, float("-inf"))
            z = torch.matmul(attention_probs(scores, q.dtype), values)
        else:
            z = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        attn_out = dense(z.reshape(b, h * dh))
        if parallel:
            return h4_to_h(act(h_to_4h(ln2(x)))) + attn_out + x
        mid = attn_out + x
        return h4_to_h(act(h_to_4h(ln2(mid)))) + mid


_same_bits: dict[tuple, bool] = {}  # (step signature, batch, threads) -> probe result, per process


def same_bits_on_threads(step: DecodeStep, batch: int, threads: int) -> bool:
    """Whether `step` gives bitwise the same logits for `batch` rows on `threads` threads as on one: a probe step
    with random inputs over `PROBE_KEYS` random cached keys both ways, run once per (`signature`, batch, threads)
    and process. False for more than `INVARIANT_MAX_BATCH` rows (not probed)."""
    if threads <= 1:
        return True
    if batch > INVARIANT_MAX_BATCH:
        return False
    key = (step.signature(), batch, threads)
    if key not in _same_bits:
        weight = step.unembed.weight
        gen = torch.Generator().manual_seed(0)
        layers, h, dh = step.config.num_hidden_layers, step.heads, step.head_size
        past = [torch.randn(2, batch, h, PROBE_KEYS, dh, generator=gen).to(weight) for _ in range(layers)]
        token = torch.randint(0, step.embed.num_embeddings, (batch,), generator=gen).to(weight.device)
        positions = torch.full((batch,), PROBE_KEYS, device=weight.device)
        before, logits = torch.get_num_threads(), []
        try:
            for n in (1, threads):
                torch.set_num_threads(n)
                cache = KVCache.for_config(step.config).reserve(PROBE_KEYS + 1)
                for i, kv in enumerate(past):
                    cache.update(i, kv[0], kv[1])
                logits.append(step(token, positions, cache, None))
        finally:
            torch.set_num_threads(before)
        _same_bits[key] = torch.equal(logits[0], logits[1])
    return _same_bits[key]
