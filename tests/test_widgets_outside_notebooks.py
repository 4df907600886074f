"""Widgets in a REPL or a script: a repr that says what a view is and how to see it, `show()`, `to_html(path)`."""

from __future__ import annotations

import re
import webbrowser

import pytest

from tests.helpers import demo_or_random
from workbench.inputs import token_strings
from workbench.viz import static
from workbench.viz.attention import AttentionView
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

TEXTS = ["When Mary and John went to the store", "1 2 3"]


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return demo_or_random(str(neox_tokenizer_file))


@pytest.fixture(scope="module")
def view(model):
    return AttentionView(model, TEXTS, layers=[0, 1], heads=[0, 1, 3])


def test_repr_says_what_the_view_is_and_how_to_see_it(model, view):
    n = sorted(len(t["tokens"]) for t in view.prompts)
    assert repr(view).splitlines()[0] == f"AttentionView: 2 texts of {n[0]}-{n[1]} tokens, layers 0-1, heads 0-1, 3"
    lens, tokens = LogitLensView(model, TEXTS[1]), TokenView(model, TEXTS[1], title="digits")
    n_layers = model.config.num_hidden_layers
    assert repr(lens).startswith(f"LogitLensView: 1 text of {len(lens.prompts[0]['tokens'])} tokens, "
                                 f"{n_layers + 1} rows (embed ... after L{n_layers - 1})")
    assert repr(tokens).startswith(f"TokenView: 'digits', 1 text of {len(tokens.texts[0]['tokens'])} tokens, "
                                   f"{n_layers} layers")
    for v in (view, lens, tokens):
        text = repr(v)
        assert "view.show()" in text and "view.to_html(" in text and "Jupyter" in text and "object at 0x" not in text


def test_notebooks_still_get_the_widget_and_its_fallback(view):
    data, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"] == repr(view)
    assert data["text/html"].startswith("<iframe srcdoc=")


def test_to_html_returns_the_path_or_the_page(view, tmp_path):
    path = view.to_html(str(tmp_path / "a.html"))
    assert path == tmp_path / "a.html" and path.read_text(encoding="utf-8").startswith("<!doctype html>")
    page = view.to_html()
    assert isinstance(page, str) and page.startswith("<!doctype html>") and 'id="wb-data"' in page


def test_show_opens_a_browser_where_there_is_one(view, tmp_path, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    monkeypatch.setenv("DISPLAY", ":0")
    path = view.show()
    assert opened == [path.as_uri()] and path.suffix == ".html" and path.name.startswith("AttentionView-")
    assert "wb-root" in path.read_text(encoding="utf-8") and capsys.readouterr().out == ""
    path.unlink()
    assert view.show(tmp_path / "v.html") == tmp_path / "v.html" and opened[-1] == (tmp_path / "v.html").as_uri()


def test_show_prints_the_path_without_a_browser(view, tmp_path, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    path = view.show(tmp_path / "v.html")
    assert opened == [] and path.is_file()
    assert capsys.readouterr().out == f"AttentionView written to {path}: open it in a web browser\n"


@pytest.mark.parametrize("entry", ["attention.js", "logit_lens.js", "token_view.js"])
def test_modules_export_render_only_in_the_default_export(entry):
    """anywidget warns (deprecation) when a module exports `render` by name; it wants `export default { render }`."""
    src = static.bundle(entry)
    assert "export default { render };" in src
    named = re.findall(r"^export\s*\{([^}]*)\}", src, re.M)  # export { a, b }
    named += re.findall(r"^export\s+(?:async\s+)?(?:function|const|let|class)\s+(\w+)", src, re.M)
    assert not any("render" in n.replace(" ", "").split(",") for n in named)


def test_control_characters_show_as_escapes(model):
    ids = model.tokenizer.encode("a\x0bb\rc\x01\n\td")
    readable = token_strings(model.tokenizer, ids, readable=True)
    assert "".join(readable) == "a\\vb\\rc\\x01\n\td"
    assert "".join(token_strings(model.tokenizer, ids)) == "a\x0bb\rc\x01\n\td"  # TransformerLens's strings stay exact
    assert "\\v" in TokenView(model, "a\x0bb").texts[0]["tokens"]
