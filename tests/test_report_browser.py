"""snn-report's HTML in a real browser: a two-model report with the report's own attacks, opened in headless
Chromium through the DevTools protocol (``tests/cdp.py``). Every image must have loaded, the decision table must
be the first table of the document, and the page must raise no console error or JavaScript exception; a
screenshot of the whole page is saved under the test's temporary folder.

Chromium: ``$SNNKIT_CHROMIUM`` or ``chromium`` (Debian's package; ``make test`` installs it where it can) on
``PATH``. Without one the tests skip and say so; a Chromium that is there but fails is a failure.
"""
from __future__ import annotations

import json
import struct

import pytest

from cdp import Chromium, find_chromium
from conftest import scaled_model_file
from snnkit.cli.report import main

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.nonnumeric, pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; or set SNNKIT_CHROMIUM to a "
                             "Chromium/Chrome binary): the report's HTML is not checked in a browser")]


def _png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def two_model_report(tmp_path_factory):
    """An MLP and a convnet on digits, on torch and loihi-emu, attacked with PGD at two eps by the report."""
    root = tmp_path_factory.mktemp("browser")
    for name in ("mlp", "conv"):
        (root / name).mkdir()
    mlp = scaled_model_file(root / "mlp" / "model.pt")
    conv = scaled_model_file(root / "conv" / "model.pt", arch="convnet")
    out = root / "report"
    rc = main([str(mlp), str(conv), "--labels", "mlp,conv", "--dataset", "digits", "--limit", "16",
               "--targets", "torch,loihi-emu", "--attack", "pgd", "--eps", "0.05,0.1", "--attack-limit", "8",
               "--steps", "3", "--device", "cpu", "-o", str(out), "--no-progress", "--json"])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


def test_report_html_in_headless_chromium(two_model_report, tmp_path):
    out, rep = two_model_report
    with Chromium(CHROMIUM, tmp_path / "profile") as browser:
        browser.navigate((out / "report.html").as_uri())
        images = browser.images()
        tables = browser.evaluate("Array.from(document.querySelectorAll('table'), t => ({id: t.id, rows: t.rows.length,"
                                  " head: Array.from(t.rows[0].cells, c => c.textContent)}))")
        first_heading = browser.evaluate("document.querySelector('h2').textContent")
        first_image_follows_summary = browser.evaluate(
            "document.querySelector('table').compareDocumentPosition(document.images[0]) "
            "& Node.DOCUMENT_POSITION_FOLLOWING")
        errors = browser.console_errors()
        shot = browser.screenshot(tmp_path / "report.png")

    # every plot of report.json is an image of the page, and every image decoded to a non-empty picture
    assert len(images) == len(rep["plots"]) >= 2 + 2 * 4  # pareto, robustness, then 4 per model
    broken = [i for i in images if not (i["natural_width"] > 0 and i["natural_height"] > 0) or i["error"]]
    assert not broken, broken
    # the decision table comes first: before any other table, under the first heading, before the first picture
    summary = tables[0]
    assert summary["id"] == "summary" and first_heading == "Summary" and first_image_follows_summary
    assert summary["rows"] == 1 + len(rep["summary"]["rows"]) == 1 + 2 * (2 + 1)  # models x (targets + twin)
    assert summary["head"][:5] == ["model", "target", "accuracy", "robust @ eps 0.05", "robust @ eps 0.1"]
    assert [t["id"] for t in tables[1:]] == [""] * (len(tables) - 1)
    assert not errors, errors
    width, height = _png_size(shot)
    assert width == 1280 and height > 1600


def test_the_browser_checks_can_fail(tmp_path):
    """The same checks on a page with a broken image, a console error and an uncaught exception report all three."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
                    '<img alt="missing" src="missing.png"><script>console.error("bad");'
                    'null.x;</script></body></html>')
    with Chromium(CHROMIUM, tmp_path / "profile") as browser:
        browser.navigate(page.as_uri())
        images = browser.images()
        errors = browser.console_errors()
    assert [(i["alt"], i["natural_width"]) for i in images] == [("missing", 0)] and images[0]["error"]
    assert any(e == "console: bad" for e in errors)
    assert any(e.startswith("exception: ") and "TypeError" in e for e in errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in errors)
