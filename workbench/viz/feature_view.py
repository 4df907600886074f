"""`FeatureView`: a sparse autoencoder's features, browsed one at a time, live in a kernel or as a standalone page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import traitlets as t

from workbench.analysis.features import (
    FeatureStats, active_features, feature_activations, feature_stats, top_logit_effects,
)  # fmt: skip
from workbench.inputs import token_strings
from workbench.viz.base import VizWidget, as_array, is_model, json_floats, json_for_script

TOKEN_FEATURES = 12  # features listed for a clicked token
PAGE_TOKEN_FEATURES = 64  # active features a standalone page keeps per prompt token (all of a TopK SAE's, k <= 64)


class FeatureView(VizWidget):
    """SAE features: a searchable list; for the selected feature its top-activating contexts (tokens shaded by its
    activation), a histogram of its non-zero activations and the tokens it boosts / suppresses through
    `W_dec @ W_U`; prompts shaded by the feature, where clicking a token lists the features active there.

    Live, selecting a feature (or a token) asks the kernel for its data; `to_html` embeds the data of the
    features it can fit (the selected one first, then `features`, then the most frequent).

    Args:
        stats: the corpus statistics (`workbench.analysis.features.feature_stats`).
        vocab: the display string of every token id.
        boosted_ids, boosted_values, suppressed_ids, suppressed_values: per feature the tokens it boosts and
            suppresses most, and by how much  # each [d_sae, n] (n = 0: none shown, for an SAE off the residual stream)
        prompt_ids: token ids of each prompt shown (default: none).
        prompt_acts: per prompt, every feature's activation on each token  # [pos, d_sae] each
        feature: the feature selected first (default: the most frequent).
        features: features the standalone page should carry besides the selected one.
        title: shown above the view.

    `FeatureView(model, sae, corpus, ...)` is shorthand for `FeatureView.from_sae(sae, model, corpus, ...)`.
    """

    _entry = "feature_view.js"
    _state_keys = ("features", "prompts", "feature", "prompt", "hook_name", "n_tokens", "n_features", "title")

    features = t.List(t.List()).tag(sync=True)  # search list rows: [index, density, max, [top boosted tokens]]
    prompts = t.List(t.Dict()).tag(sync=True)  # [{"tokens": [str, ...]}]
    feature = t.Int(0).tag(sync=True)
    prompt = t.Int(0).tag(sync=True)
    hook_name = t.Unicode("").tag(sync=True)
    n_tokens = t.Int(0).tag(sync=True)
    n_features = t.Int(0).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        stats: Any,
        vocab: Any = None,
        boosted_ids: Any = None,
        boosted_values: Any = None,
        suppressed_ids: Any = None,
        suppressed_values: Any = None,
        prompt_ids: Sequence[Sequence[int]] = (),
        prompt_acts: Sequence[Any] = (),
        feature: int | None = None,
        features: Sequence[int] = (),
        title: str = "",
        **kwargs: Any,
    ) -> None:
        if is_model(stats):  # FeatureView(model, sae, corpus, ...)
            stats, vocab, boosted_ids, boosted_values, suppressed_ids, suppressed_values, prompt_ids, prompt_acts = (
                _sae_data(vocab, stats, boosted_ids, **kwargs))
        elif kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)} (only FeatureView(model, sae, corpus, ...) takes those)")
        if not isinstance(stats, FeatureStats):
            raise TypeError(f"stats must be a FeatureStats (workbench.analysis.features.feature_stats), got {type(stats).__name__}")
        d = stats.d_sae
        self._stats = stats
        self._vocab = list(vocab) if vocab is not None else None
        logits = [boosted_ids, boosted_values, suppressed_ids, suppressed_values]
        if any(x is None for x in logits):
            raise ValueError("boosted_ids, boosted_values, suppressed_ids and suppressed_values are required "
                             "(workbench.analysis.features.top_logit_effects)")
        self._logits = [as_array(x, np.int64 if i % 2 == 0 else np.float64) for i, x in enumerate(logits)]
        for name, arr in zip(("boosted_ids", "boosted_values", "suppressed_ids", "suppressed_values"), self._logits):
            if arr.ndim != 2 or arr.shape[0] != d:
                raise ValueError(f"{name} must be [d_sae={d}, n], got shape {arr.shape}")
        if len(prompt_ids) != len(prompt_acts):
            raise ValueError(f"{len(prompt_ids)} prompts of token ids but {len(prompt_acts)} of activations")
        self._prompt_ids = [list(map(int, p)) for p in prompt_ids]
        self._prompt_acts = [as_array(a) for a in prompt_acts]
        for i, (ids, acts) in enumerate(zip(self._prompt_ids, self._prompt_acts)):
            if acts.shape != (len(ids), d):
                raise ValueError(f"prompt_acts[{i}] must be [pos={len(ids)}, d_sae={d}], got shape {acts.shape}")
        order = np.argsort(-stats.fire_count, kind="stable")
        feature = int(order[0]) if feature is None else feature
        self._extra = [int(f) for f in features]
        for f in [feature, *self._extra]:
            self._check(f)
        super().__init__(
            features=self._rows(range(d)), prompts=[{"tokens": self._strings(p)} for p in self._prompt_ids],
            feature=feature, prompt=0, hook_name=stats.hook_name, n_tokens=stats.n_tokens, n_features=d, title=title,
        )  # fmt: skip

    @classmethod
    def from_sae(
        cls,
        sae: Any,
        model: Any,
        corpus: Any,
        prompts: Any = None,
        n_logits: int = 10,
        feature: int | None = None,
        features: Sequence[int] = (),
        title: str = "",
        **stats_kwargs: Any,
    ) -> "FeatureView":
        """Compute everything the view shows from the model and the SAE, through the hook API.

        Args:
            sae: an SAE reading a residual-stream site of `model` (`workbench.sae.SAE`).
            model: a workbench causal LM with `.tokenizer`.
            corpus: texts or token ids `[n_ctx, ctx_len]` searched for top-activating contexts.
            prompts: texts (or ids) whose tokens can be clicked (default: the first two corpus contexts).
            n_logits: boosted / suppressed tokens listed per feature.
            feature, features, title: as for the constructor.
            **stats_kwargs: `ctx_len`, `max_contexts`, `batch_size`, `k`, `before`, `after`, `bins`,
                `cache_dir`, `progress` of `feature_stats` (`cache_dir` caches the corpus pass on disk).
        """
        data = _sae_data(sae, model, corpus, prompts, n_logits, **stats_kwargs)
        return cls(*data, feature=feature, features=features, title=title)

    @classmethod
    def from_model(cls, model: Any, sae: Any, corpus: Any, **kwargs: Any) -> "FeatureView":
        """`from_sae(sae, model, corpus, **kwargs)`."""
        return cls.from_sae(sae, model, corpus, **kwargs)

    def _summary(self) -> str:
        prompts = super()._summary()
        return (f"{self.n_features} SAE features at {self.hook_name} over {self.n_tokens} corpus tokens, feature "
                f"#{self.feature} selected" + (f"; {prompts}" if prompts else ""))

    # ---- data
    def _check(self, feature: int) -> int:
        d = self._stats.d_sae
        if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) or not 0 <= feature < d:
            raise ValueError(f"feature must be an index in 0..{d - 1}, got {feature!r}")
        return int(feature)

    def _strings(self, ids: Sequence[int]) -> list[str]:
        vocab = self._vocab
        return [vocab[i] if vocab is not None and 0 <= i < len(vocab) else f"#{i}" for i in ids]

    def _rows(self, feats: Sequence[int]) -> list[list]:
        s = self._stats
        density, up = s.density, self._logits[0]
        return [[int(f), float(f"{density[f]:.4g}"), float(f"{s.max_act[f]:.4g}"), self._strings(up[f, :5])] for f in feats]

    def feature_data(self, feature: int, sig: int | None = None) -> dict[str, Any]:
        """Everything the view shows for one feature, as the browser receives it.

        Args:
            sig: round floats to this many significant digits (None: 6 decimals).

        Returns:
            dict with `feature`, `density`, `max`, `mean` (over the tokens where it fires), `fires`, `contexts`
            (list of {"score", "ctx", "pos", "tokens", "values", "center"}, highest first), `hist`
            ({"counts", "width"}), `boosted` / `suppressed` ([[token, effect], ...]) and `prompt_values` (per
            prompt, the feature's activation on each token).
        """
        f = self._check(feature)
        s = self._stats
        contexts = []
        for j in range(s.top_ctx.shape[1]):
            if s.top_ctx[f, j] < 0:
                break
            ids = s.window_ids(f, j)
            keep = ids >= 0
            first = int(np.argmax(keep))
            contexts.append({
                "score": json_floats([s.top_values[f, j]], sig)[0], "ctx": int(s.top_ctx[f, j]), "pos": int(s.top_pos[f, j]),
                "tokens": self._strings(ids[keep].tolist()), "values": json_floats(s.windows[f, j][keep], sig),
                "center": s.before - first,
            })  # fmt: skip
        up_i, up_v, down_i, down_v = self._logits
        fires = int(s.fire_count[f])
        return {
            "feature": f, "density": float(s.density[f]), "max": float(s.max_act[f]), "fires": fires,
            "mean": float(s.sum_act[f] / fires) if fires else 0.0, "contexts": contexts,
            "hist": {"counts": s.hist_counts[f].tolist(), "width": float(s.hist_width[f])},
            "boosted": [[t, v] for t, v in zip(self._strings(up_i[f]), json_floats(up_v[f], sig))],
            "suppressed": [[t, v] for t, v in zip(self._strings(down_i[f]), json_floats(down_v[f], sig))],
            "prompt_values": [json_floats(a[:, f], sig) for a in self._prompt_acts],
        }  # fmt: skip

    def token_features(self, prompt: int, pos: int, n: int = TOKEN_FEATURES) -> list[tuple[int, float]]:
        """The `n` most active features on token `pos` of prompt `prompt`, strongest first.

        Raises:
            ValueError: no such prompt or position.
        """
        if not 0 <= prompt < len(self._prompt_acts):
            raise ValueError(f"prompt must be in 0..{len(self._prompt_acts) - 1}, got {prompt}")
        acts = self._prompt_acts[prompt]
        if not 0 <= pos < acts.shape[0]:
            raise ValueError(f"pos must be in 0..{acts.shape[0] - 1} for prompt {prompt}, got {pos}")
        return active_features(acts[pos : pos + 1], n)[0]

    def _respond(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        what = request.get("what")
        if what == "feature":
            return self.feature_data(int(request.get("feature", self.feature))), []
        if what == "token":
            p, pos = int(request.get("prompt", 0)), int(request.get("pos", 0))
            return {"prompt": p, "pos": pos, "features": [[f, round(v, 6)] for f, v in self.token_features(p, pos)]}, []
        raise ValueError(f"unknown request {what!r}; expected 'feature' or 'token'")

    # ---- standalone page
    def _page_features(self) -> list[int]:
        """Features in the order the page keeps them: the selected one, the requested ones, then by frequency."""
        order = np.argsort(-self._stats.fire_count, kind="stable").tolist()
        return list(dict.fromkeys([self.feature, *self._extra, *order]))

    def _export(self, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each prompt token's active features (up to `PAGE_TOKEN_FEATURES`; the page shades prompts from them) and
        the data of as many features as fit, in `_page_features` order: all at full precision, else rounded to 3
        significant digits, else the first ones only (the page says how many).

        Raises:
            ValueError: the budget does not hold even the selected feature.
        """
        state = self._state()
        ranked = self._page_features()
        tokens = [active_features(a, min(a.shape[1], PAGE_TOKEN_FEATURES)) for a in self._prompt_acts]
        cut = any(int((a > 0).sum(-1).max(initial=0)) > PAGE_TOKEN_FEATURES for a in self._prompt_acts)
        for sig in (None, 3):
            fmt = (lambda v: round(v, 6)) if sig is None else (lambda v, s=sig: float(f"{v:.{s}g}"))
            payload: dict[str, Any] = {"features": {}, "tokens": [[[[f, fmt(v)] for f, v in tok] for tok in p] for p in tokens]}
            rows: list[list] = []
            used = sum(map(len, map(json_for_script, (dict(state, features=[]), payload)))) + 400  # 400: the notes
            for f in ranked:  # each feature's share of the page: its data and its list row
                data = {k: v for k, v in self.feature_data(f, sig).items() if k != "prompt_values"}
                row = self._rows([f])[0]
                size = len(json_for_script(data)) + len(json_for_script(row)) + len(str(f)) + 6
                if used + size > budget:
                    break
                payload["features"][str(f)], used = data, used + size
                rows.append(row)
            if len(rows) == len(ranked):
                break
        if not rows:
            raise ValueError(f"max_bytes leaves {budget} bytes for this view's data, but the selected feature alone "
                             f"needs about {used + size}: raise max_bytes")
        payload["notes"] = ["values rounded to 3 significant digits"] if sig else []
        if cut:
            payload["notes"].append(f"prompt tokens carry their {PAGE_TOKEN_FEATURES} most active features only")
        if len(rows) < len(ranked):
            payload["notes"].append(f"carrying {len(rows)} of {len(ranked)} features (the selected one, those passed as "
                                    "features=, then the most frequent) to fit the page's size budget (max_bytes)")
        return dict(state, features=sorted(rows)), payload


def _sae_data(sae: Any, model: Any, corpus: Any, prompts: Any = None, n_logits: int = 10, **stats_kwargs: Any) -> tuple:
    """(stats, vocab, boosted ids, values, suppressed ids, values, prompt ids, prompt activations) of `sae` on `model`."""
    stats = feature_stats(model, sae, corpus, **stats_kwargs)
    if prompts is None:
        prompts = stats.corpus_ids[:2].astype(np.int64)
    ids, acts = feature_activations(model, sae, prompts)
    vocab = token_strings(model.tokenizer, range(model.config.vocab_size), readable=True)
    if sae.W_dec.shape[-1] == model.config.hidden_size:
        logits = top_logit_effects(model, sae, n_logits)
    else:  # features outside the residual stream (an MLP's hidden layer, hook_z) have no direct logit effect
        empty = np.zeros((stats.d_sae, 0))
        logits = (empty.astype(np.int64), empty, empty.astype(np.int64), empty)
    return (stats, vocab, *logits, ids, acts)
