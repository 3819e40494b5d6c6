"""browser: headless Chromium sees script errors and unrendered figures (skipped without it)."""

from __future__ import annotations

import pytest

from sentune.errors import SentuneError
from sentune.report import browser


@pytest.mark.slow
def test_the_render_check_sees_a_script_error(tmp_path):
    if browser.find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head></head><body>"
        '<div class="plotly-graph-div" id="fig-x-0"></div>'
        "<script>undefinedFunction();</script></body></html>"
    )
    check = browser.check_render(page)
    assert any("undefinedFunction" in e for e in check.errors)
    assert check.figures == {"fig-x-0": False}


def test_without_chromium_the_screenshot_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert browser.find_chromium() is None
    with pytest.raises(SentuneError, match="apt-get install chromium"):
        browser.screenshot(tmp_path / "report.html", tmp_path / "report.png")
