"""The report in a real browser: headless Chromium (Debian's ``chromium``, installed by .ci/run).

Chromium loads the report from disk with the network disabled. A probe script, injected into a
copy of the report only, records every JavaScript or resource error and console.error, and
after the ``load`` event writes the state of every ``<img>`` (decoded, laid out) into the DOM
that ``--dump-dom`` prints. The unmodified report is also loaded with Chromium's console log
on stderr (it has no script, so any console message means a problem), screenshotted and printed
to PDF. A negative control (a broken image and a console error) proves the probe can fail.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and Path("/usr/bin/chromium").exists():
    CHROMIUM = "/usr/bin/chromium"

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window
    ? 'resource ' + (t.tagName || '') + ' ' + String(t.src || t.href || '').slice(0, 60)
    : String(e.message));
}, true);
(function () {
  var ce = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, ' '));
    return ce.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var res = {n: imgs.length, decoded: 0, undecoded: [], laid_out: 0, not_laid_out: [],
             errors: window.__errors, sections: document.querySelectorAll('section').length,
             title: document.title};
  imgs.forEach(function (i) {
    if (i.complete && i.naturalWidth > 0 && i.naturalHeight > 0) { res.decoded++; }
    else { res.undecoded.push(i.alt); }
    var r = i.getBoundingClientRect();
    if (i.closest('details:not([open])')) { return; }
    if (r.width > 20 && r.height > 20) { res.laid_out++; } else { res.not_laid_out.push(i.alt); }
  });
  var pre = document.createElement('pre');
  pre.id = 'browser-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _probe(html_path: Path, tmp_path: Path) -> dict:
    probed = tmp_path / f"probe-{html_path.stem}.html"
    html = html_path.read_text(encoding="utf-8")
    probed.write_text(html.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    run = _chromium("--dump-dom", probed.as_uri(), profile=tmp_path / "profile-probe")
    m = re.search(r'<pre id="browser-check">(.*?)</pre>', run.stdout, flags=re.S)
    assert m, f"chromium printed no probe result (rc {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(html_lib.unescape(m.group(1)))


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("Debian 'chromium' is not installed (apt-get install chromium; "
                    ".ci/run installs it)")
    return CHROMIUM


def test_report_loads_without_errors_and_decodes_every_figure(chromium, built_report, tmp_path):
    path, _ = built_report
    n_img = path.read_text(encoding="utf-8").count("<img ")
    result = _probe(path, tmp_path)
    assert result["errors"] == []
    assert result["n"] == n_img > 0
    assert result["decoded"] == n_img, result["undecoded"]
    assert result["not_laid_out"] == []
    assert result["laid_out"] > 0
    assert result["sections"] == 9
    assert result["title"] == "Synthetic <cohort> & report"


def test_report_console_is_clean_and_renders(chromium, built_report, tmp_path):
    path, _ = built_report
    shot = tmp_path / "report.png"
    run = _chromium("--window-size=1280,2400", f"--screenshot={shot}", path.as_uri(),
                    profile=tmp_path / "profile-shot")
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert shot.exists(), run.stderr[-3000:]
    from PIL import Image

    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 10  # text, tables and figures, not a blank page
    pdf = tmp_path / "report.pdf"
    run = _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", path.as_uri(),
                    profile=tmp_path / "profile-pdf")
    assert pdf.exists(), run.stderr[-3000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 3


def test_probe_catches_broken_figures_and_console_errors(chromium, built_report, tmp_path):
    path, _ = built_report
    bad = tmp_path / "bad.html"
    bad.write_text(path.read_text(encoding="utf-8").replace(
        "<main>", '<main><img alt="broken" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom')</script>", 1), encoding="utf-8")
    result = _probe(bad, tmp_path)
    assert result["undecoded"] == ["broken"]
    assert "boom" in result["errors"]
    assert any(e.startswith("resource IMG") for e in result["errors"])
