"""Headless Debian chromium for report tests: fresh profile, no network, DOM dump and screenshot.

A page from pvtrace.report.page writes its outcome into #pvtrace-status once
every vega-embed promise settled; the DOM dump after a virtual-time budget
reads it back, and chromium's stderr log (--enable-logging=stderr) carries any
console message of the page, which the pages themselves never emit unless
something went wrong.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    # No network: every proxied request goes to a closed port and no host name resolves.
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def chromium_path() -> str | None:
    """The chromium binary, or None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    status: dict[str, str]  # attributes of #pvtrace-status
    status_text: str
    charts: dict[str, str]  # chart container id -> data-rendered
    charts_with_svg: set[str]
    console: list[str]  # console lines from chromium's log
    wall_s: float  # launch to exit, seconds
    dom: str = field(repr=False, default="")

    def problems(self, n_specs: int) -> list[str]:
        """Everything wrong with the page (empty when all charts rendered without a console message)."""
        out = [f"console: {line}" for line in self.console]
        if self.status.get("data-state") != "done":
            out.append(f"charts did not finish rendering (status {self.status})")
        if self.status.get("data-errors", "0") != "0":
            out.append(f"page reported errors: {self.status_text.strip()}")
        if self.status.get("data-rendered") != str(n_specs) or self.status.get("data-expected") != str(
            n_specs
        ):
            out.append(f"{self.status.get('data-rendered')} of {n_specs} charts rendered")
        not_drawn = [c for c, state in self.charts.items() if state != "yes" or c not in self.charts_with_svg]
        if not_drawn:
            out.append(f"charts not drawn: {', '.join(sorted(not_drawn))}")
        if len(self.charts) != n_specs:
            out.append(f"{len(self.charts)} chart containers for {n_specs} specs")
        return out


def _run(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    with tempfile.TemporaryDirectory(prefix="pvtrace-chromium-") as profile:
        cmd = [chromium_path() or CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return proc, time.perf_counter() - t


_ATTR = re.compile(r'([\w-]+)="([^"]*)"')


def check_page(page: Path, budget_ms: int = 30_000, timeout: float = 120) -> PageCheck:
    """Open a page, let it render, and read back its status, charts and console messages."""
    proc, wall = _run(
        [
            "--enable-logging=stderr",
            "--v=0",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        timeout,
    )
    dom = proc.stdout
    m = re.search(r'<div id="pvtrace-status"([^>]*)>(.*?)</div>', dom, re.S)
    status = dict(_ATTR.findall(m.group(1))) if m else {}
    charts = {}
    with_svg = set()
    for cm in re.finditer(r'<div class="chart[^"]*" id="(chart-[^"]+)"([^>]*)>', dom):
        attrs = dict(_ATTR.findall(cm.group(2)))
        charts[cm.group(1)] = attrs.get("data-rendered", "")
        if "<svg" in dom[cm.end() : cm.end() + 2000]:
            with_svg.add(cm.group(1))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return PageCheck(status, m.group(2) if m else "", charts, with_svg, console, wall, dom)


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 2400, budget_ms: int = 30_000) -> Path:
    """A PNG of the page's top `height` pixels after rendering."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc, _ = _run(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
        ],
        120,
    )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {proc.stderr[-500:]}")
    return out


def count_specs(page: Path) -> int:
    """How many charts a page embeds (from its source, independently of the browser)."""
    return page.read_text(encoding="utf-8").count('class="pvtrace-spec"')


# Scripted interaction, run inside a copy of a page once its charts have rendered: scroll-zoom the
# timeline, then click the first linked incident row; x domains before/after land on #selftest.
INTERACTION = """<script>
(function(){
 function ready(){var s=document.getElementById('pvtrace-status');return s&&s.getAttribute('data-state')==='done';}
 function dom(v){var d=v.scale('x').domain();return d[0].toFixed(6)+','+d[1].toFixed(6);}
 function go(){
  if(!ready()){setTimeout(go,50);return;}
  var out=document.createElement('div');out.id='selftest';document.body.appendChild(out);
  var v=(window.pvtraceViews||{})['chart-timeline'];
  if(!v){out.setAttribute('data-error','no timeline view among '+Object.keys(window.pvtraceViews||{}).join(' '));return;}
  out.setAttribute('data-before',dom(v));
  var svg=v.container().querySelector('.mark-group .background')||v.container().querySelector('svg');
  var r=svg.getBoundingClientRect();
  svg.dispatchEvent(new WheelEvent('wheel',{deltaY:-400,deltaMode:0,clientX:r.left+r.width/2,
   clientY:r.top+r.height/2,bubbles:true,cancelable:true,view:window}));
  setTimeout(function(){
   out.setAttribute('data-zoomed',dom(v));
   var row=document.querySelector('table.pvtrace-incidents tbody tr[data-start-ms]');
   if(!row){out.setAttribute('data-error','no linked incident row');return;}
   row.click();
   setTimeout(function(){
    out.setAttribute('data-row',row.getAttribute('data-start-ms')+','+row.getAttribute('data-end-ms'));
    out.setAttribute('data-after',dom(v));out.setAttribute('data-picked',row.className);
    out.setAttribute('data-state','done');},500);
  },500);
 }
 go();
})();
</script>"""


def interact(page: Path, budget_ms: int = 30_000) -> dict[str, str]:
    """Run INTERACTION on a copy of the page; the attributes it wrote on #selftest."""
    copy = page.with_name(page.stem + "-interaction.html")
    head, tail = page.read_text(encoding="utf-8").rsplit("</body></html>", 1)  # the last one: the page's
    copy.write_text(head + INTERACTION + "</body></html>" + tail)
    proc, _ = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", copy.resolve().as_uri()], 120)
    m = re.search(r'<div id="selftest"([^>]*)>', proc.stdout)
    return dict(_ATTR.findall(m.group(1))) if m else {}
