"""Model -> numpy arrays for the widgets and plots: the only module in `workbench.viz` that runs a model.

Everything here goes through the transformers-compatible model API (`model(input_ids, output_attentions=True,
output_hidden_states=True)`) plus forward hooks on modules whose paths are transformers' own
(`gpt_neox.layers.N.attention.dense`, `gpt_neox.layers.N.mlp.dense_4h_to_h`), so it works on workbench models
and on transformers' `GPTNeoXForCausalLM` alike. Switching to `run_with_cache` later only touches this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

TextOrTokens = Any  # str | list[str] | list[int] | list[list[int]] | torch.Tensor | np.ndarray


@dataclass
class Prompt:
    """One prompt as the widgets see it.

    Attributes:
        ids: token ids, shape [pos].
        tokens: one display string per token (decoded piece by piece, so spaces and newlines show).
    """

    ids: list[int]
    tokens: list[str]


def get_tokenizer(model: Any) -> Any:
    """The tokenizer attached to `model` (`workbench.load` sets `model.tokenizer`)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("the model has no .tokenizer; load it with workbench.load(...) or set model.tokenizer")
    return tok


def _encode(tokenizer: Any, text: str) -> list[int]:
    enc = tokenizer.encode(text)
    ids = getattr(enc, "ids", enc)  # tokenizers.Encoding or a plain list
    return [int(i) for i in ids]


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Decode each id on its own, so the display shows exactly one piece per position.

    Args:
        tokenizer: anything with `decode(list[int])` (workbench Tokenizer, tokenizers.Tokenizer, HF tokenizer).
        ids: token ids, shape [pos].

    Returns:
        One string per id; pieces that decode to nothing (partial UTF-8 bytes) fall back to the raw token.
    """
    out = []
    for i in ids:
        s = tokenizer.decode([int(i)])
        if s == "" or "\ufffd" in s:
            conv = getattr(tokenizer, "convert_ids_to_tokens", None) or getattr(tokenizer, "id_to_token", None)
            raw = conv(int(i)) if conv is not None else None
            s = raw if isinstance(raw, str) and raw else f"<{int(i)}>"
        out.append(s)
    return out


def to_prompts(model: Any, text_or_tokens: TextOrTokens) -> list[Prompt]:
    """Normalise the accepted inputs to a list of prompts.

    Args:
        model: a model with `.tokenizer`.
        text_or_tokens: a string, a list of strings, a list of ids, a list of id lists, or a tensor/array
            of ids shaped [pos] or [batch, pos] (no padding: each row is one prompt).

    Returns:
        A list of `Prompt` with at least one token each.
    """
    tok = get_tokenizer(model)
    if isinstance(text_or_tokens, str):
        items: list[Any] = [text_or_tokens]
    elif isinstance(text_or_tokens, (torch.Tensor, np.ndarray)):
        arr = np.asarray(text_or_tokens.detach().cpu() if isinstance(text_or_tokens, torch.Tensor) else text_or_tokens)
        if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"token array must be integer ids shaped [pos] or [batch, pos], got {arr.dtype} {arr.shape}")
        items = [arr.tolist()] if arr.ndim == 1 else arr.tolist()
    elif isinstance(text_or_tokens, Sequence) and len(text_or_tokens) > 0:
        if all(isinstance(t, (int, np.integer)) for t in text_or_tokens):
            items = [list(text_or_tokens)]
        else:
            items = list(text_or_tokens)
    else:
        raise TypeError(
            "text_or_tokens must be a str, a list of str, a list of token ids, a list of id lists or an id tensor; "
            f"got {type(text_or_tokens).__name__}"
        )
    prompts = []
    for item in items:
        if isinstance(item, str):
            ids = _encode(tok, item)
        elif isinstance(item, Sequence) and all(isinstance(t, (int, np.integer)) for t in item):
            ids = [int(t) for t in item]
        else:
            raise TypeError(f"each prompt must be a str or a list of token ids, got {type(item).__name__}")
        if not ids:
            raise ValueError("a prompt encoded to zero tokens; pass non-empty text")
        prompts.append(Prompt(ids=ids, tokens=token_strings(tok, ids)))
    return prompts


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _forward(model: Any, ids: list[int], **kwargs: Any) -> Any:
    x = torch.tensor([ids], dtype=torch.long, device=_device(model))
    with torch.no_grad():
        return model(x, **kwargs)


def attention_patterns(model: Any, ids: list[int]) -> list[np.ndarray]:
    """Attention probabilities of every layer for one prompt.

    Args:
        model: GPT-NeoX model.
        ids: token ids, shape [pos].

    Returns:
        One float32 array per layer, shape [head, q, k]; rows sum to 1.
    """
    out = _forward(model, ids, output_attentions=True)
    atts = getattr(out, "attentions", None)
    if not atts or any(a is None for a in atts):
        raise ValueError(
            "the model returned no attention probabilities; use the eager attention backend "
            "(attn_implementation='eager') to materialise them"
        )
    return [a[0].float().cpu().numpy() for a in atts]


def _final_ln(model: Any) -> torch.nn.Module:
    return model.gpt_neox.final_layer_norm


def _unembed_weight(model: Any) -> torch.Tensor:
    return model.embed_out.weight  # [vocab, d_model]


def resid_stack(model: Any, ids: list[int]) -> tuple[torch.Tensor, list[str]]:
    """Residual stream before layer 0 and after every layer, without the final layer norm.

    Returns:
        (resid [n_layers + 1, pos, d_model], labels ["embed", "L0", ..., "L{n-1}"]).
    """
    final: dict[str, torch.Tensor] = {}
    ln = _final_ln(model)
    h = ln.register_forward_pre_hook(lambda mod, args: final.__setitem__("x", args[0].detach()))
    try:
        out = _forward(model, ids, output_hidden_states=True)
    finally:
        h.remove()
    hs = list(out.hidden_states)
    # transformers' tuple ends with the *normed* last state; replace it by the raw one the final LN received.
    resid = torch.stack([t[0] for t in hs[:-1]] + [final["x"][0]]).float()
    n = resid.shape[0] - 1
    return resid, ["embed"] + [f"L{i}" for i in range(n)]


def logit_lens_logprobs(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """Final layer norm + unembedding applied to each residual snapshot.

    Args:
        resid: [n_layers + 1, pos, d_model].

    Returns:
        log-probabilities [n_layers + 1, pos, vocab] (float32).
    """
    with torch.no_grad():
        w = _unembed_weight(model)
        normed = _final_ln(model)(resid.to(w.dtype))
        return torch.log_softmax((normed @ w.T).float(), dim=-1)


@contextmanager
def _capture(model: Any, sites: dict[str, torch.nn.Module], pre: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in sites.items():
        if pre:
            handles.append(mod.register_forward_pre_hook(lambda m, args, name=name: store.__setitem__(name, args[0].detach())))
        else:
            handles.append(mod.register_forward_hook(lambda m, a, o, name=name: store.__setitem__(name, o.detach())))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def n_layers(model: Any) -> int:
    return len(model.gpt_neox.layers)


def mlp_post(model: Any, ids: list[int]) -> np.ndarray:
    """MLP neuron activations (after the nonlinearity) of every layer.

    Returns:
        float32 array [n_layers, pos, d_mlp].
    """
    layers = model.gpt_neox.layers
    sites = {str(i): layer.mlp.dense_4h_to_h for i, layer in enumerate(layers)}
    with _capture(model, sites, pre=True) as store:
        _forward(model, ids)
    return np.stack([store[str(i)][0].float().cpu().numpy() for i in range(len(layers))])


def component_outputs(model: Any, ids: list[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """What each component writes into the residual stream.

    Returns:
        (outputs [2 * n_layers + 1, pos, d_model] ordered embed, L0.attn, L0.mlp, L1.attn, ...;
         their labels; the raw residual the final layer norm receives [pos, d_model]).
    """
    layers = model.gpt_neox.layers
    sites: dict[str, torch.nn.Module] = {"embed": model.gpt_neox.embed_in}
    for i, layer in enumerate(layers):
        sites[f"L{i}.attn"] = layer.attention.dense
        sites[f"L{i}.mlp"] = layer.mlp.dense_4h_to_h
    final: dict[str, torch.Tensor] = {}
    h = _final_ln(model).register_forward_pre_hook(lambda m, args: final.__setitem__("x", args[0].detach()))
    try:
        with _capture(model, sites) as store:
            _forward(model, ids)
    finally:
        h.remove()
    labels = list(sites)
    return torch.stack([store[k][0].float() for k in labels]), labels, final["x"][0].float()


def direct_logit_attribution(model: Any, ids: list[int], directions: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    """Each component's direct contribution to a logit direction at every position.

    The final layer norm is linearised with the scale the real forward pass used (centre each component,
    divide by the final residual's std, multiply by the LN weight), so the contributions plus the LN-bias
    term add up to the model's logit.

    Args:
        ids: token ids, shape [pos].
        directions: unembedding directions per position, shape [pos, d_model] (e.g. W_U[next] - W_U[wrong]).

    Returns:
        (contributions [n_components, pos] as float64 numpy, component labels).
    """
    comps, labels, final_resid = component_outputs(model, ids)
    ln = _final_ln(model)
    eps = float(getattr(ln, "eps", 1e-5))
    centred = final_resid - final_resid.mean(-1, keepdim=True)
    scale = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps)  # [pos, 1]
    comps = comps - comps.mean(-1, keepdim=True)
    weighted = comps / scale * ln.weight.float()  # [comp, pos, d_model]
    contrib = (weighted * directions.float()[None]).sum(-1)
    return contrib.detach().double().cpu().numpy(), labels


def ln_bias_term(model: Any, directions: torch.Tensor) -> np.ndarray:
    """The final LN bias's contribution to each direction, shape [pos]."""
    return (_final_ln(model).bias.float() * directions.float()).sum(-1).detach().double().cpu().numpy()


def unembed_directions(model: Any, token_ids: Sequence[int], minus_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Rows of the unembedding (W_U[t] or W_U[t] - W_U[u]) per position, shape [len(token_ids), d_model]."""
    w = _unembed_weight(model).float()
    d = w[torch.as_tensor(list(token_ids), dtype=torch.long, device=w.device)]
    if minus_ids is not None:
        d = d - w[torch.as_tensor(list(minus_ids), dtype=torch.long, device=w.device)]
    return d.detach()


def per_token_loss(model: Any, ids: list[int]) -> np.ndarray:
    """Cross-entropy of predicting token t+1 from position t, shape [pos - 1] (nats)."""
    out = _forward(model, ids)
    logp = torch.log_softmax(out.logits[0].float(), -1)
    tgt = torch.tensor(ids[1:], dtype=torch.long, device=logp.device)
    return (-logp[:-1].gather(-1, tgt[:, None])[:, 0]).cpu().numpy()


def residual_norms(model: Any, text_or_tokens: TextOrTokens) -> tuple[np.ndarray, list[str]]:
    """L2 norm of the residual stream after each layer, averaged over positions (and prompts).

    Returns:
        (norms [n_layers + 1], labels ["embed", "L0", ...]).
    """
    prompts = to_prompts(model, text_or_tokens)
    total = None
    labels: list[str] = []
    for p in prompts:
        resid, labels = resid_stack(model, p.ids)
        norms = resid.norm(dim=-1).mean(-1).cpu().numpy()
        total = norms if total is None else total + norms
    return total / len(prompts), labels


def logit_diff_contributions(model: Any, text: str, answer: str, wrong: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-layer attention and MLP direct contributions to logit(answer) - logit(wrong) at the last position.

    Args:
        text: the prompt.
        answer, wrong: single-token continuations (leading space included where the tokenizer needs it).

    Returns:
        (attn [n_layers], mlp [n_layers], the model's actual logit difference).
    """
    tok = get_tokenizer(model)
    a, w = _encode(tok, answer), _encode(tok, wrong)
    if len(a) != 1 or len(w) != 1:
        raise ValueError(f"answer and wrong must each be one token; got {len(a)} and {len(w)} tokens")
    ids = to_prompts(model, text)[0].ids
    d = unembed_directions(model, [a[0]], [w[0]])
    contrib, labels = direct_logit_attribution(model, ids, d.expand(len(ids), -1))
    last = contrib[:, -1]
    attn = np.array([last[labels.index(f"L{i}.attn")] for i in range(n_layers(model))])
    mlp = np.array([last[labels.index(f"L{i}.mlp")] for i in range(n_layers(model))])
    logits = _forward(model, ids).logits[0, -1].float()
    return attn, mlp, float(logits[a[0]] - logits[w[0]])
