"""The one matplotlib figure factory: pyplot-free figures that display themselves in notebooks.

Every plot in the workbench (viz plots, eval reports, the model card) starts from `new_figure`. The figures
are `matplotlib.figure.Figure`s with an Agg canvas and no pyplot manager, so they never touch global state
and render without a display; `Figure._repr_png_` makes a cell that returns one show it as an `image/png`
output in Jupyter, whatever matplotlib backend is (or is not) configured.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as _MplFigure

DPI = 110


class Figure(_MplFigure):
    """A matplotlib Figure that Jupyter renders as a PNG (`_repr_png_`) when it is a cell's value."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)

    def _repr_html_(self) -> None:  # let IPython fall back to the PNG instead of an HTML repr
        return None


def new_figure(width: float = 7.0, height: float = 4.5, nrows: int = 0, ncols: int = 1, **subplots: Any) -> Figure:
    """A constrained-layout figure of `width` x `height` inches.

    Args:
        width, height: size in inches.
        nrows, ncols: with `nrows > 0`, a grid of axes is added (`fig.axes`); 0 adds one axes.
        **subplots: passed to `Figure.subplots` (`sharex=True`, `height_ratios=[2, 1]`, ...).

    Returns:
        The figure, with its axes in `fig.axes`.
    """
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    FigureCanvasAgg(fig)
    if nrows > 0:
        fig.subplots(nrows, ncols, squeeze=False, **subplots)
    else:
        fig.add_subplot()
    return fig


def figure_png(fig: _MplFigure, dpi: int | None = None) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
    return buffer.getvalue()


def figure_to_data_uri(fig: _MplFigure, dpi: int | None = None) -> str:
    """A figure as a `data:image/png;base64,...` URI (for self-contained HTML pages)."""
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")
