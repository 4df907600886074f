"""Reports: the comparison table against the published figures, plots, self-contained HTML, Markdown."""

from __future__ import annotations

import base64
import math
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from workbench.evals import report  # noqa: E402
from workbench.evals.baselines import load_baselines, load_learning_curves  # noqa: E402
from workbench.evals.results import EvalResults  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def make_results(num_fewshot: int = 0, num_params: int | None = 160_000_000) -> EvalResults:
    """A run's results as `evaluate` builds them (the scores are arbitrary: reports only display them)."""
    config = {"model": "my-model", "num_fewshot": num_fewshot, "limit": 200, "seed": 1234}
    if num_params is not None:
        config["num_params"] = num_params
    return EvalResults(
        metrics={"piqa": {"acc": 0.61, "acc_norm": 0.6, "acc_per_token": 0.605},
                 "lambada_openai": {"acc": 0.31, "perplexity": 41.5},
                 "arc_easy": {"acc": 0.42, "acc_norm": 0.39},
                 "boolq": {"acc": 0.55}},
        stderr={"piqa": {"acc": 0.011, "acc_norm": 0.011, "acc_per_token": None},
                "lambada_openai": {"acc": 0.0064, "perplexity": 1.6},
                "arc_easy": {"acc": 0.01, "acc_norm": 0.01}, "boolq": {"acc": 0.009}},
        config=config,
        warnings=["lambada_openai: 2 of 5153 requests were left-truncated"],
    )


def test_compare_puts_published_values_beside_the_run():
    results = make_results()
    table = report.compare(results)
    assert list(table.columns[:4]) == ["task", "metric", "my-model", "stderr"]
    assert len(table) == len(results.table())
    published = load_baselines(num_fewshot=0)
    checked = 0
    for row in table.itertuples(index=False):
        values = dict(zip(table.columns, row))
        for model in table.columns[4:]:
            hit = published[(published["model"] == model) & (published["task"] == values["task"])
                            & (published["metric"] == values["metric"])]
            if hit.empty:
                assert math.isnan(values[model])
            else:  # first source wins for duplicates
                assert values[model] == hit["value"].iloc[0]
                checked += 1
    assert checked > 40
    # columns ascend in parameter count; families outside the default set are absent
    params = published.drop_duplicates("model").set_index("model")["params"]
    assert list(params[list(table.columns[4:])]) == sorted(params[list(table.columns[4:])])
    assert "Gopher 280B" not in table.columns
    # GPT-3's paper numbers sit on acc_per_token, not on lm-eval's acc
    piqa = table.set_index(["task", "metric"])
    assert math.isnan(piqa.loc[("piqa", "acc"), "GPT-3 175B"])
    assert piqa.loc[("piqa", "acc_per_token"), "GPT-3 175B"] == pytest.approx(0.81)


def test_compare_uses_the_runs_shot_count_and_filters():
    five = report.compare(make_results(num_fewshot=5), families="pythia")
    expected = load_baselines(models="pythia-410m", tasks="arc_easy", metrics="acc", num_fewshot=5)["value"].item()
    assert five.set_index(["task", "metric"]).loc[("arc_easy", "acc"), "pythia-410m"] == expected
    picked = report.compare(make_results(), models=["pythia-70m", "GPT-NeoX-20B", "Gopher 280B"])
    assert list(picked.columns[4:]) == ["pythia-70m", "GPT-NeoX-20B", "Gopher 280B"]
    # the method on EvalResults reaches the same function
    pd.testing.assert_frame_equal(make_results().compare(models=["pythia-70m"]),
                                  report.compare(make_results(), models=["pythia-70m"]))
    with pytest.raises(ValueError, match="unknown baseline models.*pythia-70m"):
        report.compare(make_results(), models=["pythia-71m"])
    with pytest.raises(TypeError, match="EvalResults"):
        report.compare({"piqa": 0.5})


def _render(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def test_scaling_plot():
    results = make_results()
    fig = report.plot_scaling(results, task="lambada_openai", metric="acc")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "parameters" and ax.get_ylabel() == "acc" and ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"GPT-3 (paper)", "Pythia", "my-model"} <= set(labels)
    gpt3 = next(line for line in ax.get_lines() if line.get_label() == "GPT-3 (paper)")
    assert len(gpt3.get_xdata()) == 8
    star = next(line for line in ax.get_lines() if line.get_label() == "my-model")
    assert list(star.get_xdata()) == [160_000_000] and list(star.get_ydata()) == [0.31]
    assert _render(fig).startswith(PNG)
    # GPT-3 reports piqa per-token normalised: the curve says so
    labels = [t.get_text() for t in report.plot_scaling(results, task="piqa").axes[0].get_legend().get_texts()]
    assert "GPT-3 (paper) (acc_per_token)" in labels
    # unknown size: a horizontal line instead of a point
    line_fig = report.plot_scaling(make_results(num_params=None), task="piqa")
    assert "my-model (size unknown)" in [t.get_text() for t in line_fig.axes[0].get_legend().get_texts()]


def test_task_bars_and_learning_curve():
    results = make_results()
    bars = report.plot(results, "tasks", metric="acc")
    ax = bars.axes[0]
    assert ax.get_xlabel() == "task" and ax.get_ylabel() == "acc"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["piqa", "lambada_openai", "arc_easy", "boolq"]
    assert len(ax.patches) == 8  # the run and the nearest Pythia (160m), four tasks each
    assert "pythia-160m" in [t.get_text() for t in ax.get_legend().get_texts()]

    curve = report.plot(results, "learning_curve", task="piqa", metric="acc")
    ax = curve.axes[0]
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "acc"
    hline = next(line for line in ax.get_lines() if line.get_label() == "my-model")
    assert set(hline.get_ydata()) == {0.61}
    pythia_12b = next(line for line in ax.get_lines() if line.get_label() == "pythia-12b")
    expected = load_learning_curves(models="pythia-12b", tasks="piqa", metrics="acc", num_fewshot=0)
    assert list(pythia_12b.get_ydata()) == list(expected.sort_values("step")["value"])
    assert _render(curve).startswith(PNG)

    with pytest.raises(ValueError, match="unknown plot kind.*scaling"):
        report.plot(results, "pie")
    with pytest.raises(KeyError, match="no Pythia learning curve for 'boolq'"):
        report.plot_learning_curve(results, task="boolq")
    with pytest.raises(KeyError, match="not in the results"):
        report.plot_scaling(results, task="hellaswag")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "data", "srcset", "action") and value is not None:
                self.urls.append((tag, name, value))


def test_html_page_is_self_contained(tmp_path):
    results = make_results()
    path = tmp_path / "out" / "report.html"
    page = report.to_html(results, path, max_scaling_plots=1)
    assert path.read_text(encoding="utf-8") == page
    parser = _Links()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    images = [value for tag, name, value in parser.urls if tag == "img"]
    assert len(images) == 3  # one scaling plot, the task bars, a learning curve
    for tag, name, value in parser.urls:
        assert not value.lower().startswith(("http:", "https:", "//")), (tag, name, value[:60])
    for value in images:
        assert value.startswith("data:image/png;base64,")
        assert base64.b64decode(value.split(",", 1)[1]).startswith(PNG)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "my-model" in page and "0.61" in page and "left-truncated" in page
    assert "<table" in page and "pythia-160m" in page


def test_markdown_report():
    text = make_results().to_markdown()
    lines = text.splitlines()
    assert lines[0] == "# Evaluation report: my-model"
    assert "| task | metric | value | stderr |" in lines
    assert "| piqa | acc | 0.61 | 0.011 |" in lines
    assert "| boolq | acc | 0.55 | 0.009 |" in lines
    at = next(i for i, line in enumerate(lines) if line.startswith("| task | metric | my-model | stderr |"))
    header = lines[at]
    assert "pythia-160m" in header and "GPT-NeoX-20B" in header
    lambada = next(line for line in lines[at:] if line.startswith("| lambada_openai | acc | 0.31 |"))
    assert lambada.count("|") == header.count("|")
    # the published value for the nearest Pythia, from the table, sits in its column
    column = header.split(" | ").index("pythia-160m")
    expected = load_baselines(models="pythia-160m", tasks="lambada_openai", metrics="acc", num_fewshot=0)
    assert lambada.split(" | ")[column] == f"{expected['value'].item():.4g}"
    assert "- lambada_openai: 2 of 5153 requests were left-truncated" in lines
    assert "Brown et al. 2020" in text
