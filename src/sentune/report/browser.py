"""Headless Chromium as a tool: a PNG of a page and a check that its scripts and figures render.

Not part of the report's job (`report.page` writes HTML and needs no browser): `sentune report
--screenshot` and the report's render test use this module, and nothing here is needed to read a
report. Chromium is looked up on PATH; without it every call raises `SentuneError` saying how to
install it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from sentune.errors import SentuneError

_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
_MARKER = "sentune-render-check"
#: Injected first into a copy of the report: records script errors and console errors, then,
#: once the page has loaded, writes which figure divs Plotly rendered into a marker element.
_PROBE = (
    """<script>
window.__sentuneErrors = [];
window.addEventListener("error", function (e) { window.__sentuneErrors.push(String(e.message)); });
window.addEventListener("unhandledrejection", function (e) {
  window.__sentuneErrors.push("unhandled rejection: " + String(e.reason)); });
(function () { var original = console.error; console.error = function () {
  window.__sentuneErrors.push(Array.prototype.join.call(arguments, " "));
  return original.apply(console, arguments); }; })();
window.addEventListener("load", function () { setTimeout(function () {
  var figures = Array.prototype.map.call(document.querySelectorAll("div.plotly-graph-div"),
    function (d) { return {id: d.id, rendered: !!d.querySelector(".plot-container svg")}; });
  var out = document.createElement("pre"); out.id = "MARKER";
  out.textContent = JSON.stringify({errors: window.__sentuneErrors, figures: figures});
  document.body.appendChild(out); }, 1000); });
</script>"""
).replace("MARKER", _MARKER)


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    return next((path for name in _CHROMIUM if (path := shutil.which(name))), None)


def _chromium(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    """Run Chromium headless with a throwaway profile (so runs never share state)."""
    browser = find_chromium()
    if browser is None:
        raise SentuneError(
            "no Chromium found for the screenshot; install it (Debian: apt-get install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="sentune-chromium-") as profile:
        return subprocess.run(
            [browser, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def screenshot(report: str | Path, png: str | Path, *, timeout: float = 120) -> Path:
    """Save a PNG of the top of a page (1400 x 2000 pixels) with headless Chromium.

    Args:
        report: The HTML file (e.g. `analysis/<run>/report.html`).
        png: Where to write the PNG.
        timeout: Seconds before Chromium is given up on.

    Returns:
        The PNG's absolute path.

    Raises:
        SentuneError: No Chromium is installed, or it wrote no PNG.
    """
    png = Path(png).resolve()
    done = _chromium(
        [
            f"--screenshot={png}",
            "--window-size=1400,2000",
            "--virtual-time-budget=10000",
            Path(report).resolve().as_uri(),
        ],
        timeout=timeout,
    )
    if not png.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise SentuneError(f"Chromium wrote no screenshot of {report}: {tail}")
    return png


class RenderCheck(NamedTuple):
    """What a headless browser saw when it opened the report."""

    #: JavaScript errors and console errors, in order.
    errors: list[str]
    #: Figure div ids and whether Plotly drew each.
    figures: dict[str, bool]


def check_render(report: str | Path, *, timeout: float = 180) -> RenderCheck:
    """Open a copy of a page in headless Chromium and report script errors and which Plotly
    figures were drawn (a probe script injected before anything else records both).

    Args:
        report: The HTML file; it is not modified (the probe goes into a temporary copy).
        timeout: Seconds before Chromium is given up on.

    Returns:
        A `RenderCheck`; a page that never finished loading gives one error saying so.

    Raises:
        SentuneError: No Chromium is installed.
    """
    text = Path(report).read_text(encoding="utf-8")
    probed = text.replace("<head>", "<head>" + _PROBE, 1)
    with tempfile.TemporaryDirectory(prefix="sentune-check-") as folder:
        copy = Path(folder) / "report.html"
        copy.write_text(probed, encoding="utf-8")
        done = _chromium(
            ["--dump-dom", "--virtual-time-budget=15000", copy.as_uri()], timeout=timeout
        )
    found = re.search(rf'<pre id="{_MARKER}">(.*?)</pre>', done.stdout, re.S)
    if not found:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return RenderCheck([f"the page never finished loading: {tail}"], {})
    data = json.loads(html.unescape(found.group(1)))
    return RenderCheck(
        errors=list(data["errors"]), figures={f["id"]: f["rendered"] for f in data["figures"]}
    )
