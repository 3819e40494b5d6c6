"""Draw a run's analysis: one self-contained HTML report (Plotly, no CDN) and a terminal summary.

Everything drawn here is computed by `sentune.analysis`; this package only turns that data into
panels (figures, tables and text) and lays them out. It never trains or scores a model.

- `page`: the report file (`write_report`) and the panels' order (`build_panels`);
- `panel`: what a panel is, and the pieces every panel is drawn with;
- `panels_trials`, `panels_params`, `panels_data`: the panels, by subject;
- `sentences`: the lines the page, the panels and the terminal share;
- `terminal`: the terminal summary (`summary`);
- `browser`: headless Chromium for screenshots and the render check (a tool, not the report's
  job: reading a report needs no browser);
- `dashboard`: optuna-dashboard, read-only on loopback, on a run's journal.

`browser` and `dashboard` are imported where they are used (`from sentune.report import
browser`), not here.
"""

from __future__ import annotations

from sentune.report.page import build_panels, write_report
from sentune.report.panel import FLOOR_COLOR, NUMBER_FORMAT, STATUS_COLORS, STATUS_SYMBOLS, Panel
from sentune.report.terminal import summary

__all__ = [
    "FLOOR_COLOR",
    "NUMBER_FORMAT",
    "STATUS_COLORS",
    "STATUS_SYMBOLS",
    "Panel",
    "build_panels",
    "summary",
    "write_report",
]
