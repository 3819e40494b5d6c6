"""What a panel of the report is, and the pieces every panel is drawn with: Plotly behind a
guarded import, the status colours and markers, the floor line, HTML tables."""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sentune.analysis import COMPLETED, ERROR, STOPPED, UNFINISHED
from sentune.errors import SentuneError

#: Colour of each trial status, the same in every panel that colours by status.
STATUS_COLORS = {
    COMPLETED: "#1f77b4",
    STOPPED: "#ff7f0e",
    UNFINISHED: "#7f7f7f",
    ERROR: "#d62728",
}
#: Marker of each trial status where colour marks the trial (learning curves).
STATUS_SYMBOLS = {
    COMPLETED: "circle",
    STOPPED: "x",
    UNFINISHED: "circle-open",
    ERROR: "triangle-up",
}
FLOOR_COLOR = "#2ca02c"
#: Number format (d3) of parameter values and scores on axes: 3 significant digits, no
#: trailing zeros (0.42, not 0.420000 or 0.675954).
NUMBER_FORMAT = ".3~g"


class Panel(NamedTuple):
    """One section of the report: a title, a caption, and what it shows."""

    #: The section's anchor (`#id`) and the prefix of its figures' div ids (`fig-<id>-<i>`).
    id: str
    title: str
    caption: str
    #: Why something is missing or what to keep in mind (shown highlighted; "" for none).
    note: str = ""
    #: Plotly figures, drawn in order.
    figures: tuple = ()
    #: HTML fragments (tables) after the figures.
    html: tuple[str, ...] = ()


class Plotly(NamedTuple):
    go: Any
    pio: Any
    make_subplots: Any


def import_plotly() -> Plotly:
    """Plotly's modules, or a one-line error that says what to install."""
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.subplots import make_subplots
    except ImportError:
        raise SentuneError(
            "the report needs plotly: pip install plotly (or reinstall sentune)"
        ) from None
    return Plotly(go, pio, make_subplots)


def table_html(
    frame: pd.DataFrame, *, floats: str = "{:.4g}", row_classes: dict[int, str] | None = None
) -> str:
    """An HTML table of `frame` (escaped); `row_classes` maps a row position to a CSS class."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float | np.floating):
            return floats.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cls = (row_classes or {}).get(i)
        attr = f' class="{cls}"' if cls else ""
        cells = "".join(
            f'<td class="num">{cell(v)}</td>'
            if isinstance(v, int | float | np.number) and not isinstance(v, bool)
            else f"<td>{cell(v)}</td>"
            for v in values
        )
        rows.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def floor_line(fig, plotly: Plotly, value: float, *, row: int | None = None, col=None) -> None:
    """The floor as a dashed line, labelled in the legend (a label on the plot covers points)."""
    where = {"row": row, "col": col} if row is not None else {}
    fig.add_hline(y=value, line_dash="dash", line_color=FLOOR_COLOR, **where)
    if col in (None, 1):
        fig.add_trace(
            plotly.go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"dash": "dash", "color": FLOOR_COLOR},
                name=f"TF-IDF floor {value:.3f}",
                legendgroup="floor",
            ),
            **where,
        )
