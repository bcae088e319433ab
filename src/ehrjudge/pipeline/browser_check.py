"""Render a report in headless Chromium and read back what a person would see.

Chromium loads a copy of the page with a probe script appended; the probe writes the rendered
headings, table count and the decoded size of every inline image into the DOM, which
`--dump-dom` returns. A screenshot is taken in the same way for the docs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ehrjudge.errors import EhrJudgeError

# Flags that keep Chromium from reaching for the network on a closed machine.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
PROBE = """<script>
window.addEventListener('load', () => {
  const out = {
    headings: [...document.querySelectorAll('h1,h2,h3')].map(h => h.textContent.trim()),
    tables: document.querySelectorAll('table').length,
    images: [...document.images].map(i => [i.naturalWidth, i.naturalHeight]),
  };
  const pre = document.createElement('pre');
  pre.id = 'ehrjudge-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: int) -> str:
    chromium = find_chromium()
    if chromium is None:
        raise EhrJudgeError("Chromium not found: install Debian's `chromium` package to check the report")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise EhrJudgeError(f"Chromium failed ({result.returncode}): {result.stderr[-500:]}")
    return result.stdout


def inspect_report(report: str | Path, timeout: int = 120) -> dict:
    """Headings, table count and image sizes as rendered by headless Chromium."""
    report = Path(report)
    with tempfile.TemporaryDirectory() as folder:
        probe_page = Path(folder) / "probe.html"
        probe_page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        dom = _run(["--dump-dom", probe_page.as_uri()], timeout)
    match = re.search(r'<pre id="ehrjudge-probe">(.*?)</pre>', dom, re.S)
    if match is None:
        raise EhrJudgeError("the report did not finish rendering in Chromium (no probe output)")
    import html as html_lib

    return json.loads(html_lib.unescape(match.group(1)))


def screenshot(report: str | Path, png: str | Path, width: int = 1200, height: int = 2400, timeout: int = 120) -> Path:
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}", Path(report).resolve().as_uri()], timeout)
    if not png.exists():
        raise EhrJudgeError(f"Chromium wrote no screenshot to {png}")
    return png
