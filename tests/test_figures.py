"""workbench.figures: the one figure factory; its figures display as PNG in notebooks."""

from __future__ import annotations

from IPython.core.formatters import DisplayFormatter

from workbench.figures import figure_png, figure_to_data_uri, new_figure


def test_a_returned_figure_is_displayed_as_png():
    fig = new_figure(3, 2)
    fig.axes[0].plot([0, 1], [1, 0])
    data, _ = DisplayFormatter().format(fig)  # what IPython sends for a cell whose value is the figure
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n" and "text/html" not in data
    assert figure_png(fig)[:4] == b"\x89PNG" and figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_grids_of_axes():
    fig = new_figure(4, 4, nrows=2, ncols=1, sharex=True, height_ratios=[2, 1])
    assert len(fig.axes) == 2 and fig.get_figwidth() == 4
