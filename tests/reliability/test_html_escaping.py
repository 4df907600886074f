"""Hostile strings in exported pages (issue 15, item 5): in titles, tokens, logit-lens targets and top tokens, row and
component labels, every page renders, shows the strings literally, runs none of their scripts and asks for nothing
over the network."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.helpers import browser
from tests.test_viz_browser import chromium  # noqa: F401 (the browser fixture)
from workbench.viz.attention import AttentionView
from workbench.viz.base import html_text, json_for_script
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

PAYLOADS = [
    "<script>window.pwned=1</script>",
    "<!--<script>",
    "<!-- a comment -->",
    "</script><script>window.pwned=2</script>",
    "<img src=x onerror=window.pwned=3>",
    '"><img src=http://127.0.0.1:9/p.png onerror="window.pwned=4">',
    "<svg onload=window.pwned=5>",
    "<style>*{display:none}</style>",
    "&lt;b&gt; &amp; &#60;",
    "]]><![CDATA[",
    "\u202eevil\u202c",  # right-to-left override
    "a\u2028b\u2029c",  # line / paragraph separators (end a JS string literal in old engines)
    "nul\x00byte",
    "lone\ud800surrogate",
    "\U0001f600 fine",  # a valid astral character stays as it is
]
TITLE = " | ".join(PAYLOADS)

# what widgets/common.js `visible` escapes: controls, bidi controls, separators, lone surrogates
_INVISIBLE = {*range(0x09), *range(0x0B, 0x20), 0x7F, 0x61C, 0x200E, 0x200F, *range(0x202A, 0x202F), 0x2028, 0x2029,
              *range(0x2066, 0x206A), *range(0xD800, 0xE000)}  # fmt: skip


def visible(s: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) in _INVISIBLE else c for c in s)


def shown(token: str) -> str:
    """A token as widgets/common.js `showToken` displays it."""
    v = visible(token.replace("\n", "\\n").replace("\t", "\\t"))
    return re.sub(" $", "\u00b7", re.sub("^ ", "\u00b7", v)) or "\u2205"


class PayloadTokenizer:
    """A tokenizer whose vocabulary is the payloads: decode(i) is PAYLOADS[i], encode(s) its index."""

    def decode(self, ids: list[int]) -> str:
        return "".join(PAYLOADS[i] for i in ids)

    def encode(self, text: str) -> list[int]:
        return [PAYLOADS.index(text)] if text in PAYLOADS else []


def _patterns(n: int, layers: int = 1, heads: int = 2) -> np.ndarray:
    logits = torch.randn(layers, heads, n, n, generator=torch.Generator().manual_seed(0))
    return logits.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -torch.inf).softmax(-1).numpy()


def _views() -> dict[str, object]:
    n, rows = len(PAYLOADS), 3
    lp = torch.full((rows, n, n), -9.0)
    lp[:, torch.arange(n), torch.arange(n)] = 0.0  # each position's top token: the payload at that position
    lens = LogitLensView(PAYLOADS, lp.log_softmax(-1), ids=[list(range(n))], tokenizer=PayloadTokenizer(),
                         row_labels=["<b>embed</b>", "<img src=x onerror=window.pwned=6>", "\u202eL1"],
                         targets=[PAYLOADS[1], PAYLOADS[3]], title=TITLE)
    dla = np.linspace(-1, 1, 3 * n).reshape(3, n)
    tokens = TokenView(PAYLOADS, loss=np.linspace(0, 3, n), activations=np.ones((1, n, 2), np.float32), dla=dla,
                       components=[PAYLOADS[0], PAYLOADS[4], PAYLOADS[10]], kind="dla", title=TITLE)
    attention = AttentionView([PAYLOADS, PAYLOADS[::-1]], [_patterns(n), _patterns(n)], title=TITLE)
    return {"attention": attention, "lens": lens, "tokens": tokens}


def test_embedded_json_is_inert_and_round_trips():
    text = json_for_script({"s": PAYLOADS, TITLE: 1})
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029", "\x00"} and text.isascii()
    assert json.loads(text) == {"s": PAYLOADS, TITLE: 1}  # lone surrogates included


def test_html_text_escapes_markup_and_what_a_page_cannot_carry():
    out = html_text(TITLE)
    assert out.isascii() and not set(out) & {"<", ">", '"', "\x00"}
    assert "&#xfffd;" in out and "&#x202e;" in out and "&amp;lt;b&amp;gt;" in out


@pytest.mark.parametrize("name", ["attention", "lens", "tokens"])
def test_pages_hold_no_markup_from_the_strings(name):
    page = _views()[name].to_html()
    head, _, body = page.partition("</head>")
    assert re.search(r"<title>([^<]*)</title>", head), "the title must hold no markup"
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script type="application/json" id="wb-state">', '<script type="application/json" id="wb-data">',
                       '<script type="module">']
    for blob in re.findall(r'<script type="application/json" id="wb-\w+">(.*?)</script>', page, re.S):
        assert not set(blob) & {"<", ">", "&"}


# ---- in Chromium ------------------------------------------------------------------------------------
@pytest.fixture
def open_page(chromium):
    """open_page(path) -> page, ready; records every request and error, and checks after the test that the page
    asked for nothing but itself, logged no error and ran no payload."""
    opened = []

    def _open(path):
        page = chromium.new_page(viewport={"width": 1100, "height": 800})
        log = {"requests": [], "errors": []}
        page.on("request", lambda r: log["requests"].append(r.url))
        page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: log["errors"].append(str(e)))
        page.route("http*://**", lambda route: route.abort())
        page.goto(path.as_uri())
        page.wait_for_selector("#wb-root[data-ready='1'] .wb .wb-bar", timeout=10_000)
        opened.append((page, path, log))
        return page

    yield _open
    for page, path, log in opened:
        assert page.evaluate("() => window.pwned") is None, "a payload ran"
        assert page.evaluate("() => document.querySelectorAll('img, svg, iframe, style, script').length") == 4
        page.close()
        assert log["requests"] == [path.as_uri()] and log["errors"] == [], log


def _texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "es => es.map(e => e.textContent)")


def _js_slice(s: str, n: int) -> str:
    """`s.slice(0, n)` as JavaScript counts (UTF-16 code units)."""
    return s.encode("utf-16-le", "surrogatepass")[: 2 * n].decode("utf-16-le", "surrogatepass")


def _open_view(open_page, tmp_path, name: str, loaded: str):
    """(view, page): the view's page opened, its first request answered (`data-loaded`), its title checked."""
    view = _views()[name]
    page = open_page(view.to_html(tmp_path / f"{name}.html"))
    page.wait_for_function("k => document.querySelector('.wb').dataset.loaded === k", arg=loaded)
    assert page.inner_text(".wb-title") == visible(TITLE)
    assert page.title() == " ".join(TITLE.replace("\x00", "\ufffd").replace("\ud800", "\ufffd").split(" "))
    return view, page


@browser
@pytest.mark.browser
def test_attention_page_shows_the_strings_literally(open_page, tmp_path):
    view, page = _open_view(open_page, tmp_path, "attention", "0:0:0")
    assert _texts(page, ".wb-tokens .wb-tok") == [shown(t) for t in PAYLOADS]
    options = _texts(page, ".wb-attn select >> nth=0 >> option")
    assert options == [f"{i}: {visible(_js_slice(''.join(p['tokens'][:6]), 30))}\u2026" for i, p in enumerate(view.prompts)]
    box = page.locator(".wb-over").bounding_box()
    n = len(PAYLOADS)
    page.mouse.move(box["x"] + box["width"] * 4.5 / n, box["y"] + box["height"] * 5.5 / n)  # query 5, key 4
    tip = page.inner_text(".wb-tip")
    assert shown(PAYLOADS[5]) in tip and shown(PAYLOADS[4]) in tip


@browser
@pytest.mark.browser
def test_logit_lens_page_shows_the_strings_literally(open_page, tmp_path):
    view, page = _open_view(open_page, tmp_path, "lens", "0|final")
    assert _texts(page, ".wb-lens tr:first-child th")[1:] == [shown(t) for t in PAYLOADS]
    assert _texts(page, ".wb-lens th.wb-row")[1:] == [visible(x) for x in view.row_labels]
    top = [cell[0] for cell in view.grid(0, "final")["top_tokens"][1]]  # the payloads, decoded for display
    assert top[:5] == PAYLOADS[:5] and _texts(page, "tr[data-row] >> nth=1 >> td") == [shown(t) for t in top]
    page.hover("td[data-r='1'][data-c='4']")
    tip = page.inner_text(".wb-tip")
    assert visible(view.row_labels[1]) in tip and shown(PAYLOADS[4]) in tip
    for target in view._extra:  # typed targets: the option, the info line and each cell's target token
        page.select_option(".wb-lensview select >> nth=0", target)
        page.wait_for_function("k => document.querySelector('.wb-lensview').dataset.loaded === k", arg=f"0|{target}")
        assert repr(target[5:]) in page.inner_text(".wb-info")
        page.hover("td[data-r='0'][data-c='0']")
        assert shown(target[5:]) in page.inner_text(".wb-tip")  # target line: its token


@browser
@pytest.mark.browser
def test_token_view_page_shows_the_strings_literally(open_page, tmp_path):
    view, page = _open_view(open_page, tmp_path, "tokens", f"dla:{PAYLOADS[10]}")
    assert _texts(page, ".wb-text .wb-tok") == [shown(t) for t in PAYLOADS]
    assert _texts(page, ".wb-tokenview select >> nth=3 >> option") == [visible(c) for c in view.components]
    for comp in view.components:
        page.select_option(".wb-tokenview select >> nth=3", comp)
        page.wait_for_function("k => document.querySelector('.wb-tokenview').dataset.loaded === k", arg=f"dla:{comp}")
        assert visible(comp) in page.inner_text(".wb-colorbar")
        page.hover(".wb-text .wb-tok[data-i='3']")
        tip = page.inner_text(".wb-tip")
        assert shown(PAYLOADS[3]) in tip and visible(comp) in tip


@browser
@pytest.mark.browser
def test_notebook_fallback_iframe_is_inert(chromium, tmp_path):
    """The static fallback a notebook shows (`_repr_html_`, an iframe's srcdoc) renders the same page."""
    path = tmp_path / "cell.html"
    path.write_text(_views()["tokens"]._repr_html_(), encoding="utf-8")
    page = chromium.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    frame = page.frames[1]
    frame.wait_for_selector("#wb-root[data-ready='1'] .wb-tok")
    assert frame.evaluate("() => window.pwned") is None and page.evaluate("() => window.pwned") is None
    assert frame.eval_on_selector_all(".wb-text .wb-tok", "es => es.map(e => e.textContent)") == [shown(t) for t in PAYLOADS]
    assert requests == [path.as_uri()]
    page.close()


@browser
@pytest.mark.browser
def test_the_issues_case_a_comment_opener_no_longer_blanks_the_page(open_page, tmp_path):
    """`<!--<script>` alone (no later `-->`) once swallowed the rest of the page: the view never rendered."""
    s, n = "<!--<script>", 3
    views = [
        AttentionView([s, "b", "c"], _patterns(n), title=s),
        LogitLensView([s, "b", "c"], torch.zeros(2, n, 4).log_softmax(-1), targets=[s], tokenizer=PayloadTokenizer(), title=s),
        TokenView([s, "b", "c"], activations=np.zeros((1, n, 1)), dla=np.zeros((1, n)), components=[s], title=s),
    ]
    for i, view in enumerate(views):
        page = open_page(view.to_html(tmp_path / f"{i}.html"))
        assert page.inner_text(".wb-title") == s and shown(s) in _texts(page, ".wb-tok, .wb-lens th")
