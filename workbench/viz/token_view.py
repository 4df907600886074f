"""`TokenView`: text coloured by a value per token, with a neuron/component selector and top examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t

from workbench.analysis import component_logit_attribution, mlp_activations, per_token_loss
from workbench.inputs import as_prompts
from workbench.viz.base import VizWidget, as_array, fit, is_model, json_floats, per_prompt_tokens, positions_note

KINDS = ("loss", "neuron", "dla")


class TokenView(VizWidget):
    """Tokens coloured by a per-token value, chosen in the browser and computed in the kernel.

    Values: `"loss"` (cross-entropy of each token given the ones before it), an MLP neuron's activation
    (`kind="neuron"`, `layer`, `neuron`), or a component's direct logit attribution to the actual next token
    (`kind="dla"`, `component` such as `"L3.attn"`, `"L3.mlp"`, `"embed"`). For a neuron the view also lists its
    top-activating examples over the example texts.

    Args:
        tokens: display strings of one text, or one list per text.
        loss: per text `[pos]`, the loss of each token (NaN for the first).
        activations: per text `[layers, pos, d_mlp]` MLP activations.
        dla: per text `[components, pos]` direct logit attributions to the next token (NaN at the last).
        components: the labels of `dla`'s rows (`embed`, `L0.attn`, `L0.mlp`, ...).
        example_tokens, example_activations: texts searched for a neuron's top activations (default: these).
        kind, layer, neuron, component: the initial value shown.
        neurons: extra (layer, neuron) pairs to precompute for the standalone page.
        k: how many top examples; window: tokens of context before the top token.

    `TokenView(model, texts, ..., examples=texts)` is shorthand for `TokenView.from_model(...)`.
    """

    _entry = "token_view.js"
    _state_keys = ("texts", "kind", "layer", "neuron", "component", "components", "n_layers", "d_mlp", "neuron_options", "title")

    texts = t.List(t.Dict()).tag(sync=True)
    kind = t.Unicode("loss").tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    neuron = t.Int(0).tag(sync=True)
    component = t.Unicode("embed").tag(sync=True)
    components = t.List(t.Unicode()).tag(sync=True)
    n_layers = t.Int(1).tag(sync=True)
    d_mlp = t.Int(1).tag(sync=True)
    neuron_options = t.List(t.List()).tag(sync=True)  # only set in standalone pages
    title = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Any,
        loss: Any = None,
        activations: Any = None,
        dla: Any = None,
        components: Sequence[str] | None = None,
        example_tokens: Any = None,
        example_activations: Any = None,
        kind: str = "loss",
        layer: int = 0,
        neuron: int = 0,
        component: str | None = None,
        neurons: Sequence[tuple[int, int]] = (),
        k: int = 8,
        window: int = 8,
        title: str = "",
        examples: Any = None,
    ) -> None:
        if is_model(tokens):
            data = _model_data(tokens, loss, examples)
            tokens, loss, activations, dla, components, example_tokens, example_activations = data
        token_lists = per_prompt_tokens(tokens)
        n = len(token_lists)
        self._loss = _per_text(loss, n, "loss", lambda i: np.full(len(token_lists[i]), np.nan))
        self._post = _per_text(activations, n, "activations", None, np.float16)  # [L, pos, d_mlp] each
        self._dla = _per_text(dla, n, "dla", None, np.float64)  # [c, pos] each
        self._ex_tokens = token_lists if example_tokens is None else per_prompt_tokens(example_tokens)
        self._ex_post = self._post if example_activations is None else _per_text(
            example_activations, len(self._ex_tokens), "example_activations", None, np.float16)
        labels = list(components) if components is not None else []
        if len(labels) != self._dla[0].shape[0]:
            raise ValueError(f"{len(labels)} component labels for dla with {self._dla[0].shape[0]} rows")
        self._k, self._window = k, window
        n_layers, d_mlp = self._post[0].shape[0], self._post[0].shape[2]
        self._extra = [(int(l), int(n)) for l, n in neurons]
        component = labels[-1] if component is None else component
        self._check(kind, layer, neuron, component, n_layers, d_mlp, labels)
        for l, n in self._extra:
            self._check("neuron", l, n, component, n_layers, d_mlp, labels)
        super().__init__(
            texts=[{"tokens": tk} for tk in token_lists], kind=kind, layer=layer, neuron=neuron, component=component,
            components=labels, n_layers=n_layers, d_mlp=d_mlp, title=title,
        )  # fmt: skip

    @classmethod
    def from_model(cls, model: Any, texts: Any, examples: Any = None, **kwargs: Any) -> "TokenView":
        """Loss, MLP activations and direct logit attributions of `model` on each text, from `workbench.analysis`
        (`per_token_loss`, `mlp_activations`, `component_logit_attribution`: through the hook system, so
        under active hooks).

        Args:
            model: a workbench causal LM with `.tokenizer`.
            texts: a string or several strings (or token ids).
            examples: texts searched for a neuron's top activations (default: `texts`).
            **kwargs: `kind`, `layer`, `neuron`, `component`, `neurons`, `k`, `window`, `title`.
        """
        return cls(model, texts, examples=examples, **kwargs)

    @staticmethod
    def _check(kind: str, layer: int, neuron: int, component: str, n_layers: int, d_mlp: int, labels: list[str]) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer must be in 0..{n_layers - 1}, got {layer}")
        if not 0 <= neuron < d_mlp:
            raise ValueError(f"neuron must be in 0..{d_mlp - 1}, got {neuron}")
        if component not in labels:
            raise ValueError(f"component must be one of {labels}, got {component!r}")

    def values(self, key: str) -> dict[str, Any]:
        """Values for `key` ("loss", "neuron:L:N", "dla:<component>") as the browser receives them.

        Returns:
            dict with `values` (per text, per token, None where undefined), `lo`, `hi`, `diverging`, `label`, and
            for neurons `examples` (top activations over the example texts, with context windows).
        """
        vals, out = self._series(key)
        return dict(out, values=[json_floats(v) for v in vals])

    def _series(self, key: str) -> tuple[list[np.ndarray], dict[str, Any]]:
        """(values per text as float arrays, everything else `values(key)` returns)."""
        out: dict[str, Any] = {"key": key}
        if key == "loss":
            vals = self._loss
            out.update(label="loss (nats)", diverging=False)
        elif key.startswith("neuron:"):
            try:
                _, l, n = key.split(":")
                layer, neuron = int(l), int(n)
            except ValueError as err:
                raise ValueError(f"neuron key must look like 'neuron:<layer>:<index>', got {key!r}") from err
            self._check("neuron", layer, neuron, self.components[0], self.n_layers, self.d_mlp, self.components)
            vals = [p[layer, :, neuron].astype(np.float64) for p in self._post]
            out.update(label=f"L{layer} neuron {neuron}", diverging=True, examples=self.top_examples(layer, neuron))
            out["n_example_texts"] = len(self._ex_tokens)
        elif key.startswith("dla:"):
            comp = key[4:]
            if comp not in self.components:
                raise ValueError(f"component must be one of {self.components}, got {comp!r}")
            ci = self.components.index(comp)
            vals = [d[ci] for d in self._dla]
            out.update(label=f"{comp} \u2192 logit of next token", diverging=True)
        else:
            raise ValueError(f"unknown value {key!r}; expected 'loss', 'neuron:<layer>:<index>' or 'dla:<component>'")
        finite = np.concatenate([v[np.isfinite(v)] for v in vals] + [np.zeros(1)])
        out.update(lo=float(finite.min()), hi=float(finite.max()))
        return vals, out

    def top_examples(self, layer: int, neuron: int) -> list[dict[str, Any]]:
        """The `k` highest activations of a neuron over the example texts, each with its context window; a
        position whose window overlaps a higher one's in the same text is skipped (it would show that context
        again).

        Returns:
            list of {"score", "text", "pos", "tokens", "values", "center"} sorted by score, highest first.
        """
        acts = [post[layer, :, neuron].astype(np.float64) for post in self._ex_post]
        order = sorted(((-a[pos], ti, pos) for ti, a in enumerate(acts) for pos in range(len(a))))
        out: list[dict[str, Any]] = []
        taken: dict[int, list[tuple[int, int]]] = {}  # text -> windows [lo, hi) shown
        for neg, ti, pos in order:
            if len(out) == self._k:
                break
            lo, hi = max(0, pos - self._window), min(len(self._ex_tokens[ti]), pos + 3)
            if any(lo < b and a < hi for a, b in taken.get(ti, ())):
                continue
            taken.setdefault(ti, []).append((lo, hi))
            out.append({
                "score": float(-neg), "text": ti, "pos": pos, "tokens": self._ex_tokens[ti][lo:hi],
                "values": json_floats(acts[ti][lo:hi]), "center": pos - lo,
            })  # fmt: skip
        return out

    def _respond(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        if request.get("what") != "values":
            raise ValueError(f"unknown request {request.get('what')!r}; expected 'values'")
        return self.values(str(request.get("key", "loss"))), []

    def _neurons_for_page(self) -> list[tuple[int, int]]:
        pairs = [(self.layer, self.neuron)] + self._extra
        return list(dict.fromkeys(pairs))

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["neuron_options"] = [[f"{l}:{n}", f"L{l} neuron {n}"] for l, n in self._neurons_for_page()]
        return state

    def _export(self, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every value the page's selectors offer; when over budget, rounded to 3 significant digits, then the first
        positions of each text only (the page says so)."""
        state = self._state()
        keys = ["loss"] + [f"dla:{c}" for c in self.components] + [f"neuron:{l}:{n}" for l, n in self._neurons_for_page()]
        series = {k: self._series(k) for k in keys}
        lengths = [len(t["tokens"]) for t in self.texts]

        def build(sig: int | None, n: int) -> tuple[dict, dict]:
            values = {}
            for key, (vals, meta) in series.items():
                values[key] = dict(meta, values=[json_floats(v[:n], sig) for v in vals])
                if "examples" in meta:
                    values[key]["examples"] = [dict(e, values=json_floats(np.array(e["values"], dtype=float), sig))
                                               for e in meta["examples"]]
            notes = (["values rounded to 3 significant digits"] if sig else []) + positions_note(n, lengths)
            return dict(state, texts=[{"tokens": t["tokens"][:n]} for t in state["texts"]]), {"values": values, "notes": notes}

        return fit(build, [None, 3], max(lengths), budget)


def _per_text(values: Any, n: int, what: str, default: Any = None, dtype: Any = np.float64) -> list[np.ndarray]:
    """One array per text from a list of arrays (or, for one text, a single array)."""
    if values is None:
        if default is None:
            raise ValueError(f"{what} is required")
        return [default(i) for i in range(n)]
    items = [values] if n == 1 and not isinstance(values, (list, tuple)) else list(values)
    if len(items) != n:
        raise ValueError(f"{what} has {len(items)} entries for {n} texts")
    return [as_array(v, dtype) for v in items]


def _component_label(label: str) -> str:
    """`analysis` labels -> the view's: `0_attn_out` -> `L0.attn`, `3_mlp_out` -> `L3.mlp`, `embed` stays."""
    if label == "embed":
        return label
    layer, kind = label.split("_", 1)
    return f"L{layer}.{kind.removesuffix('_out')}"


def _model_data(model: Any, texts: Any, examples: Any) -> tuple:
    """(tokens, loss, activations, dla, components, example tokens, example activations) of `model`."""
    prompts = as_prompts(model, texts)
    loss, post, dla, labels = [], [], [], []
    for p in prompts:
        ids = torch.tensor([p.ids])
        step = per_token_loss(model, ids)[0][0].cpu().numpy() if len(p.ids) > 1 else np.zeros(0)
        loss.append(np.concatenate([[np.nan], step]))  # token t's loss given tokens < t
        post.append(mlp_activations(model, ids)[:, 0])  # [L, pos, d_mlp]
        attrs, labels, _ = component_logit_attribution(model, ids)  # next-token logits; NaN at the last position
        dla.append(attrs[:, 0])
    examples = prompts if examples is None else as_prompts(model, examples)
    ex_post = post if examples is prompts else [mlp_activations(model, torch.tensor([p.ids]))[:, 0] for p in examples]
    return ([p.tokens for p in prompts], loss, post, dla, [_component_label(l) for l in labels],
            [p.tokens for p in examples], ex_post)
