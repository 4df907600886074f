"""`VizWidget`: the anywidget base every workbench widget shares.

Live in a kernel, the browser sends `{"type": "request", "id", "what", ...}` custom messages and the widget
answers `{"type": "response", "id", "ok", "meta"}` plus binary buffers. `to_html` writes the same front-end
code into one page, where a stand-in model answers those requests from data embedded in the page. Outside a
notebook (a REPL, a script) a view's repr says what it shows and how to see it: `view.show()` opens that page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import sys
import tempfile
import webbrowser
import zlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import anywidget
import numpy as np

from workbench.viz import static

DEFAULT_MAX_BYTES = 5_000_000


def pack(arr: np.ndarray, level: int = 6) -> str:
    """uint8 array -> zlib-deflated, base64 text (the page inflates it with DecompressionStream)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(arr, dtype=np.uint8).tobytes(), level)).decode("ascii")


def json_for_script(obj: Any) -> str:
    """`obj` as JSON that is inert inside a `<script>` element: ASCII only (so U+2028/2029, NUL and lone
    surrogates are `\\u` escapes), with `<`, `>` and `&` as `\\u003c`, `\\u003e`, `\\u0026`, so that no string can
    close the element (`</script>`), open a comment (`<!--`) or start a double-escaped script (`<!--<script>`)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)  # ensure_ascii: every non-ASCII char escaped
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # only inside strings


def html_text(s: str) -> str:
    """`s` as HTML text or attribute value: markup escaped, anything outside printable ASCII as a character
    reference (NUL and lone surrogates, which a page cannot carry, as U+FFFD, as the HTML parser would)."""

    def ref(m: re.Match) -> str:
        c = ord(m.group())
        return "&#xfffd;" if c == 0 or 0xD800 <= c < 0xE000 else f"&#x{c:x};"

    return re.sub(r"[^\x20-\x7e\n\t]", ref, html.escape(s, quote=True))


def json_floats(values: Any, sig: int | None = None, decimals: int = 6) -> list[float | None]:
    """Values as JSON numbers (None where not finite), rounded to `decimals` places or to `sig` significant digits."""
    fmt = (lambda x: round(x, decimals)) if sig is None else (lambda x: float(f"{x:.{sig}g}"))
    return [fmt(x) if math.isfinite(x) else None for x in np.asarray(values, dtype=np.float64).ravel().tolist()]


def fit(build: Callable[[Any, int], tuple[dict, dict]], levels: Sequence[Any], n: int, budget: int) -> tuple[dict, dict]:
    """The most detailed (state, payload) of a standalone page whose embedded JSON fits `budget` bytes.

    Tries each of `levels` (most detailed first) with all `n` positions, then the last level with fewer leading
    positions (about as many as fit: sizes grow about linearly with positions).

    Args:
        build: (level, positions) -> (state, payload); the payload says what it leaves out (`notes`).
        levels: detail levels, most detailed first.
        n: positions of the longest input.
        budget: bytes for the JSON of state and payload together.

    Raises:
        ValueError: not even one position fits.
    """
    for level in levels:
        out = build(level, n)
        size = sum(map(len, map(json_for_script, out)))
        if size <= budget:
            return out
    p = n
    while p > 1:
        p = max(1, min(int(p * 0.95), int(p * budget / size)))
        out = build(levels[-1], p)
        size = sum(map(len, map(json_for_script, out)))
        if size <= budget:
            return out
    raise ValueError(f"max_bytes leaves {budget} bytes for this view's data, but even one position needs {size}: "
                     "raise max_bytes")


def positions_note(shown: int, lengths: Sequence[int]) -> list[str]:
    """The page note for inputs cut to their first `shown` positions ([] when nothing is cut)."""
    n = max(lengths)
    if shown >= n:
        return []
    of = f"of {n}" if len(lengths) == 1 else f"of each text (the longest has {n})"
    return [f"showing positions 0-{shown - 1} {of}, to fit the page's size budget (max_bytes)"]


def is_model(x: Any) -> bool:
    """Whether `x` is a workbench model (the `View(model, text)` shorthand for `View.from_model(model, text)`)."""
    return hasattr(x, "run_with_cache") and hasattr(x, "config")


def as_array(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """A tensor or array-like as a numpy array (on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def per_prompt_tokens(tokens: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Display strings of one prompt (a list of str) or of several (a list of lists) -> one list per prompt."""
    if isinstance(tokens, str) or not tokens:
        raise TypeError("tokens must be a non-empty list of display strings (or one such list per prompt)")
    return [list(tokens)] if isinstance(tokens[0], str) else [list(x) for x in tokens]


class VizWidget(anywidget.AnyWidget):
    """Shared machinery: request dispatch, standalone HTML export and the HTML fallback in notebooks."""

    _entry: ClassVar[str] = ""
    _state_keys: ClassVar[tuple[str, ...]] = ()
    #: Byte budget of the static page embedded next to the live widget (shown by frontends without widget
    #: support: nbviewer, VS Code without the widget renderer); 0 turns the fallback off.
    fallback_max_bytes: ClassVar[int] = 1_500_000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.__dict__.get("_entry"):
            cls._esm = static.bundle(cls._entry)
            cls._css = static.css()
        super().__init_subclass__(**kwargs)

    def __init__(self, **traits: Any) -> None:
        super().__init__(**traits)
        self.on_msg(self._on_custom_msg)

    # ---- kernel side of the request channel
    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "request":
            return
        try:
            meta, buffers = self._respond(content)
            meta = dict(meta, source="kernel")
            self.send({"type": "response", "id": content.get("id"), "ok": True, "meta": meta}, buffers=buffers)
        except Exception as err:  # the browser shows the message instead of hanging
            self.send({"type": "response", "id": content.get("id"), "ok": False, "error": f"{type(err).__name__}: {err}"})

    def _respond(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """Answer one browser request; returns (JSON-able meta, binary buffers)."""
        raise NotImplementedError

    def _static_payload(self, max_bytes: int) -> dict[str, Any]:
        """Everything the standalone page's responder needs, as JSON-able data, within `max_bytes` of JSON; a
        `notes` list says what was left out or rounded to fit."""
        raise NotImplementedError

    def _export(self, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, payload) of the standalone page, their JSON together within `budget` bytes."""
        state = self._state()
        return state, self._static_payload(budget - len(json_for_script(state)))

    def _state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._state_keys}

    # ---- export
    def to_html(self, path: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                title: str | None = None) -> str | Path:
        """One standalone HTML page (data, JS and CSS inline; no kernel, no network).

        Args:
            path: where to write the page; None only returns it.
            max_bytes: size budget of the page (bytes, at least 50,000); long inputs are stored at lower
                precision or resolution, or cut to their first positions, to fit (the page says so).
            title: the page's <title> (default: the view's title, else its class name).

        Returns:
            The path written (a `Path`), or the page as a string when `path` is None.

        Raises:
            ValueError: `max_bytes` is too small for even the coarsest form of this view.
        """
        page = self._page(max_bytes, title)
        if path is None:
            return page
        path = Path(path)
        path.write_text(page, encoding="utf-8")
        return path

    def show(self, path: str | Path | None = None) -> Path:
        """Write the standalone page and open it in a web browser, where there is one (else print its path).

        Args:
            path: where to write it (default: a new temporary file).

        Returns:
            The page's path.
        """
        if path is None:
            fd, name = tempfile.mkstemp(prefix=f"{type(self).__name__}-", suffix=".html")
            os.close(fd)
            path = name
        path = Path(self.to_html(path)).resolve()
        if not _open_in_browser(path.as_uri()):
            print(f"{type(self).__name__} written to {path}: open it in a web browser")
        return path

    def __repr__(self) -> str:
        # AnyWidget's repr is object's (`<... object at 0x...>`): say what this shows and how to see it.
        name = type(self).__name__
        return (f"{name}: {self._summary()}\n"
                f"  view.show() opens it in a web browser; view.to_html(\"{name.lower()}.html\") writes it to a file;\n"
                "  in Jupyter, a cell that ends with the view displays it")

    def _summary(self) -> str:
        """What the view holds, read from the traits the views share: texts, layers, heads, rows, title."""
        facts = []
        texts = getattr(self, "prompts", None) or getattr(self, "texts", None) or []
        if texts:
            counts = sorted({len(x.get("tokens", ())) for x in texts})
            span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            facts.append(f"{len(texts)} text{'s' if len(texts) > 1 else ''} of {span} tokens")
        if getattr(self, "layers", None):
            facts.append(f"layers {_ranges(self.layers)}")
        elif getattr(self, "n_layers", None):
            facts.append(f"{self.n_layers} layers")
        if getattr(self, "heads", None):
            facts.append(f"heads {_ranges(self.heads)}")
        if getattr(self, "row_labels", None):
            facts.append(f"{len(self.row_labels)} rows ({self.row_labels[0]} ... {self.row_labels[-1]})")
        title = getattr(self, "title", "")
        return ", ".join(([repr(title)] if title else []) + facts)

    def _page(self, max_bytes: int, title: str | None) -> str:
        """The standalone page (see `to_html`).

        Raises:
            ValueError: `max_bytes` below 50,000, or too small for even the coarsest form of this view's data.
        """
        if max_bytes < 50_000:
            raise ValueError(f"max_bytes must be at least 50000, got {max_bytes}")
        boot = (  # in the same module as the widget's code, so `render` is in scope without being exported
            "\n// ---- standalone bootstrap\n"
            "{\n"
            "  const state = JSON.parse(document.getElementById('wb-state').textContent);\n"
            "  const data = JSON.parse(document.getElementById('wb-data').textContent);\n"
            "  const el = document.getElementById('wb-root');\n"
            "  render({ model: staticModel(state, staticResponder(data)), el });\n"
            "  pageNotes(el, data.notes);\n"
            "  el.dataset.ready = '1';\n"
            "}\n"
        )
        parts = [
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html_text(title or getattr(self, 'title', '') or type(self).__name__)}</title>\n"
            f"<style>\n{self._css}\n</style></head>\n<body>\n"
            '<div id="wb-root"></div>\n<script type="application/json" id="wb-state">',
            None,
            '</script>\n<script type="application/json" id="wb-data">',
            None,
            f'</script>\n<script type="module">\n{self._esm}{boot}</script>\n</body></html>\n',
        ]
        fixed = sum(len(x.encode("utf-8")) for x in parts if x is not None)
        state, payload = self._export(max_bytes - fixed - 100)  # 100: the "source" added below
        payload["source"] = "standalone page"
        parts[1], parts[3] = json_for_script(state), json_for_script(payload)
        page = "".join(parts)
        size = len(page.encode("utf-8"))
        if size > max_bytes:
            raise ValueError(f"{type(self).__name__}: this input needs a page of at least {size} bytes, over "
                             f"max_bytes={max_bytes}; raise max_bytes or show less (fewer texts, layers or heads)")
        return page

    def _repr_html_(self) -> str:
        """The standalone page in a sandboxed iframe, for frontends that cannot show widgets."""
        try:
            page = self._page(max(self.fallback_max_bytes, 200_000), None)
        except ValueError as err:  # an input too large for the fallback's budget: say so instead of failing
            return f"<p>{html_text(str(err))}</p>"
        return (
            f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            'style="width:100%;height:760px;border:0"></iframe>'
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None or not self.fallback_max_bytes:
            return bundle
        data, meta = bundle
        data = dict(data)
        data["text/html"] = self._repr_html_()
        return data, meta


def _ranges(values: Sequence[int]) -> str:
    """`[0, 1, 2, 3, 7]` -> `"0-3, 7"`."""
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _open_in_browser(url: str) -> bool:
    """Open `url` in a graphical web browser; False where there is none (a server, a container)."""
    graphical = any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))  # BROWSER: the user's
    if sys.platform.startswith("linux") and not graphical:
        return False  # only a console browser (lynx, w3m) could open: it would take over the terminal
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
