"""A report as its reader sees it: rendered by headless Chromium (Debian's `chromium`) at 1280 px.

`measure(html_path)` loads a copy of the page with a script that, once everything has loaded,
writes what the tests check into the page: the page's height and width, the viewport's width,
the elements that reach past its right edge, and every image's decoded size. Chromium's
`--dump-dom` returns the page, measurements included. No browser driver is needed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

WIDTH = 1280
PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, view = window.innerWidth;
  const wide = [...document.body.querySelectorAll("*")]
    .filter(el => el.getBoundingClientRect().right > view + 0.5)
    .map(el => el.tagName + ":" + (el.id || el.textContent.slice(0, 40)));
  const images = [...document.images].map(img => ({alt: img.alt, complete: img.complete,
                                                    width: img.naturalWidth, height: img.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "synthscale-measure";
  out.textContent = JSON.stringify({height: root.scrollHeight, width: root.scrollWidth, viewport: view,
                                    wide: wide, images: images});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary, or None (the tests skip and say why)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def measure(html_path: Path, work: Path) -> dict:
    """{height, width, viewport, wide: [elements past the right edge], images: [{alt, complete, width, height}]}."""
    page = work / "measured.html"
    text = Path(html_path).read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},900",
         "--virtual-time-budget=20000", f"--user-data-dir={work / 'chromium-profile'}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="synthscale-measure">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium gave no measurement (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))
