"""One self-contained HTML page: Vega, Vega-Lite and vega-embed inlined, charts as inline specs.

The page needs no network. When every chart has rendered (or failed) it writes
the outcome into #pvtrace-status, so a headless browser can check it.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import polars as pl
import vl_convert

from pvtrace import __version__
from pvtrace.outputs import atomic_file
from pvtrace.report.figure import Figure


@dataclass
class Section:
    """A titled group of figures on a page."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    intro: str = ""

    @property
    def anchor(self) -> str:
        return "sec-" + "".join(ch if ch.isalnum() else "-" for ch in self.title.lower())


def vl_version() -> str | None:
    """The Vega-Lite version Altair writes specs for, as vl-convert names it (e.g. '6.4')."""
    wanted = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    return wanted if wanted in vl_convert.get_vegalite_versions() else None


@functools.cache
def js_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script defining window.vegaEmbed (no CDN)."""
    return vl_convert.javascript_bundle(vl_version=vl_version()).replace("</script", "<\\/script")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.4em 0 .3em}.sub{color:#555;margin:0 0 1em}
nav{font-size:.95em;margin:1em 0}nav a{margin-right:1em;color:#1f5fbf;text-decoration:none}
.caption{color:#444;max-width:60em;margin:.2em 0 .5em}.note{color:#7a4b00;background:#fff6e0;padding:.3em .6em;
border-left:3px solid #e0a000;max-width:60em;margin:.3em 0}.nodata{color:#555;background:#f2f2f2;padding:.8em 1em;
border-left:3px solid #aaa;max-width:60em}table{border-collapse:collapse;margin:.4em 0 1em;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}.chart{margin:.4em 0 1em;overflow-x:auto}
#pvtrace-status{display:none}#pvtrace-status.failed{display:block;color:#900;background:#fee;padding:1em;white-space:pre-wrap}
footer{color:#777;font-size:.85em;margin-top:3em}tr.picked td{background:#fff3c4}
.scroll{max-height:420px;overflow-y:auto;display:inline-block}.limits{background:#f5f5f5;border-left:3px solid #888;padding:.6em 1em;max-width:70em}.limits li{margin:.2em 0}
"""

# Before anything else runs: collect every error, failed resource load, console error or warning.
_ERROR_HOOK = """
window.__pvtraceErrors=[];
window.addEventListener('error',function(e){var t=e.target;window.__pvtraceErrors.push(
 (t&&t!==window&&(t.src||t.href))?'failed to load '+(t.src||t.href):'error: '+(e.message||e.type));},true);
window.addEventListener('unhandledrejection',function(e){window.__pvtraceErrors.push('unhandled rejection: '+e.reason);});
['error','warn'].forEach(function(level){var orig=console[level];console[level]=function(){
 window.__pvtraceErrors.push('console.'+level+': '+Array.prototype.join.call(arguments,' '));orig.apply(console,arguments);};});
"""

# Embed every chart; when all settle, record how many rendered (an <svg> with marks) and any errors.
_EMBED = """
(function(){
 var status=document.getElementById('pvtrace-status'),errors=window.__pvtraceErrors;window.pvtraceViews={};
 if(typeof vegaEmbed!=='function'){errors.push('vegaEmbed is not defined');}
 var specs=Array.prototype.slice.call(document.querySelectorAll('script.pvtrace-spec'));
 var jobs=specs.map(function(el){
  var id=el.getAttribute('data-target'),box=document.getElementById(id);
  return Promise.resolve().then(function(){return vegaEmbed('#'+id,JSON.parse(el.textContent),{renderer:'svg',actions:false});})
   .then(function(r){var svg=box.querySelector('svg');window.pvtraceViews[id]=r.view;
     if(!svg||!svg.querySelector('.mark-group, .role-mark'))throw new Error('no marks drawn');
     box.setAttribute('data-rendered','yes');return r;})
   .catch(function(e){box.setAttribute('data-rendered','failed');errors.push(id+': '+e);throw e;});
 });
 Promise.allSettled(jobs).then(function(rs){
  var ok=rs.filter(function(r){return r.status==='fulfilled';}).length;
  status.setAttribute('data-expected',String(jobs.length));
  status.setAttribute('data-rendered',String(ok));
  status.setAttribute('data-errors',String(errors.length));
  status.setAttribute('data-render-ms',String(Math.round(performance.now())));
  if(errors.length){status.className='failed';status.textContent='Some charts failed:\\n'+errors.join('\\n');}
  status.setAttribute('data-state','done');
 });
})();
"""


def _table_html(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    numeric = [dt.is_numeric() for dt in df.dtypes]
    body = []
    for row in df.iter_rows():
        cells = "".join(
            f'<td class="num">{html.escape(_cell(v))}</td>' if num else f"<td>{html.escape(_cell(v))}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


def _spec_json(fig: Figure) -> str:
    return json.dumps(fig.spec(), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _figure_html(fig: Figure, specs: list[str]) -> str:
    parts = [f'<div class="figure" id="figure-{fig.name}">', f"<h3>{html.escape(fig.title)}</h3>"]
    if fig.caption:
        parts.append(f'<p class="caption">{html.escape(fig.caption)}</p>')
    if fig.is_empty:
        parts.append(f'<p class="nodata">{html.escape(fig.note or "no data")}</p>')
    else:
        if fig.chart is not None:
            target = f"chart-{fig.name}"
            parts.append(f'<div class="chart" id="{target}"></div>')
            specs.append(
                f'<script type="application/json" class="pvtrace-spec" data-target="{target}">{_spec_json(fig)}</script>'
            )
        if fig.table is not None:
            parts.append(_table_html(fig.table))
        if fig.html is not None:
            parts.append(fig.html)
        if fig.note:
            parts.append(f'<p class="note">{html.escape(fig.note)}</p>')
    parts.append("</div>")
    return "\n".join(parts)


# Sortable tables (click a header) and the incident table's link to the timeline: a row click
# sets the timeline's zoom selection (its x signal) around the incident and scrolls to it.
_TABLES = """
(function(){
 function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent:v;}
 document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.style.cursor='pointer';th.title='sort';
   th.addEventListener('click',function(){var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    var num=th.getAttribute('data-num')==='1',dir=th.getAttribute('data-dir')==='asc'?-1:1;
    rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
     return dir*(num?(parseFloat(x)-parseFloat(y)):String(x).localeCompare(String(y)));});
    rows.forEach(function(r){body.appendChild(r);});th.setAttribute('data-dir',dir>0?'asc':'desc');});});});
 window.pvtraceGoto=function(lo,hi){var v=(window.pvtraceViews||{})['chart-timeline'];if(!v)return false;
  var pad=Math.max((hi-lo)*1.5,0.002);v.signal('zoom_start_ms',[lo-pad,hi+pad]);v.runAsync();
  var box=document.getElementById('figure-timeline');if(box&&box.scrollIntoView)box.scrollIntoView();return true;};
 document.querySelectorAll('table.pvtrace-incidents tbody tr[data-start-ms]').forEach(function(tr){
  tr.style.cursor='pointer';tr.addEventListener('click',function(){
   document.querySelectorAll('table.pvtrace-incidents tr.picked').forEach(function(o){o.className='';});
   tr.className='picked';window.pvtraceGoto(parseFloat(tr.getAttribute('data-start-ms')),parseFloat(tr.getAttribute('data-end-ms')));});});
})();
"""


def render_page(
    title: str, subtitle: str, sections: list[Section], progress: Callable[[], None] | None = None
) -> str:
    """The whole HTML document; `progress` is called after each figure (their specs are most of
    the time a page takes)."""
    specs: list[str] = []
    body = []
    for sec in sections:
        body.append(f'<section id="{sec.anchor}"><h2>{html.escape(sec.title)}</h2>')
        if sec.intro:
            body.append(f'<p class="caption">{html.escape(sec.intro)}</p>')
        for f in sec.figures:
            body.append(_figure_html(f, specs))
            if progress is not None:
                progress()
        body.append("</section>")
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style>",
            f"<script>{_ERROR_HOOK}</script>",
            f"<script>{js_bundle()}</script>",
            "</head><body><main>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="sub">{html.escape(subtitle)}</p>',
            f"<nav>{nav}</nav>",
            '<noscript><p class="nodata">The charts need JavaScript (all of it is inside this file).</p></noscript>',
            *body,
            '<div id="pvtrace-status" data-state="pending"></div>',
            f"<footer>Made by pvtrace {html.escape(__version__)}. Self-contained: works offline.</footer>",
            "</main>",
            *specs,
            f"<script>{_EMBED}</script>",
            f"<script>{_TABLES}</script>",
            "</body></html>",
        ]
    )


def write_page(text: str, path: Path | str, force: bool = False) -> Path:
    """Write a page atomically (pvtrace.outputs), refusing to overwrite an existing file unless forced."""
    path = Path(path)
    with atomic_file(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
