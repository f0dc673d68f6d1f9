"""One self-contained HTML page: inline CSS, figures as base64 PNG, no script, no network.

Every number links to the cells it came from (`#cell-N` anchors into the cells appendix,
with all ids in the link's title); flagged measurements carry a red ⚑ and estimates or
predictions a label, in tables, under figures and in the appendix.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tokenjoule.report.data import Section, fmt_number, warning_flags

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1150px;
     color:#1d2329;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #dde3ea;padding-bottom:.2em;margin-top:2em}
.meta{color:#58636e;font-size:.92em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #e3e7ec}
figcaption,.caption{color:#3b4650;font-size:.92em;margin:.3em 0}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}
th,td{border:1px solid #d5dbe1;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f1f4f7} td:first-child,th:first-child{text-align:left}
a{color:#1559a8;text-decoration:none} a:hover{text-decoration:underline}
.missing{background:#fff7e6;border:1px solid #f0c36d;padding:.6em 1em;border-radius:4px}
.missing code{font-size:.85em}
.unavailable{background:#f4f5f7;border:1px dashed #9aa5b1;padding:.6em 1em;border-radius:4px}
.flag{color:#c0262d;font-weight:bold} tr.flagged td{background:#fdecec}
.est{background:#e8e1f7;color:#4b2a8a;border-radius:3px;padding:0 4px;font-size:.8em}
.pred{background:#e2f0e6;color:#1f6b3a;border-radius:3px;padding:0 4px;font-size:.8em}
tr.estimate td{background:#f5f1fc} tr.failed td{color:#7b828a}
.cells{font-size:.82em;color:#58636e;word-wrap:break-word}
.legend span{margin-right:1.4em}
nav ul{columns:2;font-size:.92em} .wide{overflow-x:auto}
"""


class _Cells:
    """Lookup of a cell's marks (flags, estimate) for links and badges."""

    def __init__(self, store):
        self.records = {int(r.id): r for r in store.find(status=None)}

    def warnings(self, cid: int) -> list[str]:
        rec = self.records.get(cid)
        return warning_flags(rec.flags if rec else [])

    def estimate(self, cid: int) -> bool:
        rec = self.records.get(cid)
        return rec is not None and rec.is_estimate


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _link(text: str, ids: Iterable[int], cells: _Cells, estimate: bool = False, predicted: bool = False) -> str:
    ids = sorted(set(ids))
    body = _e(text)
    if ids:
        title = "from cell" + ("s " if len(ids) > 1 else " ") + ", ".join(str(i) for i in ids)
        body = f'<a href="#cell-{ids[0]}" title="{_e(title)}">{body}</a>'
    warn = sorted({w for i in ids for w in cells.warnings(i)})
    if warn:
        body += f' <span class="flag" title="flagged: {_e(", ".join(warn))}">⚑</span>'
    if estimate or any(cells.estimate(i) for i in ids):
        body += ' <span class="est" title="an estimate, not a measurement">estimate</span>'
    if predicted:
        body += ' <span class="pred" title="a model prediction, not a measurement">predicted</span>'
    return body


def _id_list(ids: list[int], cells: _Cells) -> str:
    parts = []
    for i in ids:
        mark = ' <span class="flag">⚑</span>' if cells.warnings(i) else ""
        mark += ' <span class="est">est.</span>' if cells.estimate(i) else ""
        parts.append(f'<a href="#cell-{i}">{i}</a>{mark}')
    return f'<p class="cells">cells: {", ".join(parts)}</p>' if parts else ""


def _section(sec: Section, cells: _Cells) -> str:
    out = [f'<h2 id="{_e(sec.name)}">{_e(sec.title)}</h2>']
    if sec.caption:
        out.append(f'<p class="caption">{_e(sec.caption)}</p>')
    if sec.png_path:
        data = base64.b64encode(Path(sec.png_path).read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{_e(sec.title)}" src="data:image/png;base64,{data}">'
                   f'<figcaption>data: <a href="{_e(Path(sec.csv_path).name)}">{_e(Path(sec.csv_path).name)}'
                   f'</a>{" (each row names its cell_id)" if sec.cell_ids else ""}</figcaption></figure>')
        out.append(_id_list(sec.cell_ids, cells))
    elif sec.table is not None:
        t = sec.table
        rows = ["<tr>" + "".join(f"<th>{_e(c)}</th>" for c in t.columns) + "</tr>"]
        for row in t.rows:
            rows.append("<tr>" + "".join(
                f"<td>{_link(v.text, v.cell_ids, cells, v.estimate, v.predicted)}</td>" for v in row) + "</tr>")
        out.append(f"<div class=\"wide\"><table>{''.join(rows)}</table></div>")
        if sec.csv_path:
            name = Path(sec.csv_path).name
            out.append(f'<p class="cells">data: <a href="{_e(name)}">{_e(name)}</a></p>')
    elif sec.missing:
        items = "".join(f"<li>{_e(m.label())}<br><code>{_e(m.command())}</code></li>" for m in sec.missing)
        out.append(f'<div class="missing"><b>Not drawn: the store is missing {len(sec.missing)} cell(s).</b> '
                   f"Measure these (or a sweep over them) and run the report again:<ul>{items}</ul></div>")
    else:
        out.append(f'<div class="unavailable">{_e(sec.unavailable or "not available")}</div>')
    for note in sec.notes:
        out.append(f'<p class="caption">note: {_e(note)}</p>')
    return "\n".join(out)


APPENDIX_COLS = ("id", "kind", "status", "model", "engine/mode", "decoding", "batch", "in", "out", "GPUs",
                 "energy (J)", "J / output token", "duration (s)", "avg power (W)", "method", "flags", "GPU",
                 "measured (UTC)")


def _appendix(cells: _Cells, linked: set[int]) -> str:
    rows = ["<tr>" + "".join(f"<th>{c}</th>" for c in APPENDIX_COLS) + "</tr>"]
    for cid, rec in sorted(cells.records.items()):
        s, m = rec.spec, rec.metrics
        dec = rec.decoding
        flags = rec.flags
        method = rec.method or "—"
        est = cells.estimate(cid)
        classes = [c for c, on in (("flagged", bool(cells.warnings(cid))), ("estimate", est),
                                   ("failed", rec.status != "ok")) if on]
        energy = _e(fmt_number(m.get("energy_j"))) if rec.status == "ok" else _e(f"failed: {rec.error or ''}")
        vals = [f'<a href="#cell-{cid}">{cid}</a>' + (" ·" if cid in linked else ""), rec.kind, rec.status,
                s.get("model"), f"{s.get('engine')}/{s.get('mode')}", dec or "—",
                s.get("batch_size", "—"), s.get("input_tokens", "—"), s.get("output_tokens", "—"),
                s.get("tensor_parallel", 1), energy, fmt_number(m.get("energy_per_output_token_j")),
                fmt_number(m.get("duration_s")), fmt_number(m.get("avg_power_w")),
                f"{method}" + (" (estimate)" if est else ""),
                ", ".join(flags) or "—", rec.device_name or "—",
                rec.provenance.get("time_utc") or rec.created_at or "—"]
        tds = "".join(f"<td>{v if k in (0, 10) else _e(v)}</td>" for k, v in enumerate(vals))
        cls = f' class="{" ".join(classes)}"' if classes else ""
        rows.append(f'<tr id="cell-{cid}"{cls}>{tds}</tr>')
    return ("<h2 id=\"cells\">Cells appendix</h2><p class=\"caption\">Every stored cell; · marks cells "
            "used above. Red rows were flagged by the meter, purple rows are estimates.</p>"
            f"<div class=\"wide\"><table>{''.join(rows)}</table></div>")


def write_html(path: Path, sections: list[Section], store, linked: list[int], model: str,
               traces: list[str]) -> Path:
    cells = _Cells(store)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_ok = sum(1 for r in cells.records.values() if r.status == "ok")
    n_flag = sum(1 for i in cells.records if cells.warnings(i))
    n_est = sum(1 for i in cells.records if cells.estimate(i))
    toc = "".join(f'<li><a href="#{_e(s.name)}">{_e(s.title)}</a>{"" if s.drawn else " (not drawn)"}</li>'
                  for s in sections)
    body = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>tokenjoule report: {_e(model)}</title><style>{CSS}</style></head><body>",
        f"<h1>tokenjoule report</h1><p class=\"meta\">store <code>{_e(store.path)}</code> · "
        f"{n_ok} successful of {len(cells.records)} cells · {n_flag} flagged · {n_est} estimates · "
        f"model of single-model figures: <b>{_e(model)}</b> · traces: {_e(', '.join(traces) or 'none')} "
        f"· generated {now}</p>",
        '<p class="legend meta"><span><span class="flag">⚑</span> flagged by the meter (short window, '
        'counter disagreement, foreign process, …)</span><span><span class="est">estimate</span> not a '
        'sensor reading</span><span><span class="pred">predicted</span> a model, not a measurement</span>'
        "<span>numbers link to their cells</span></p>",
        f"<nav><ul>{toc}<li><a href=\"#cells\">Cells appendix</a></li></ul></nav>",
        *(_section(s, cells) for s in sections),
        _appendix(cells, set(linked)),
        "</body></html>",
    ]
    path.write_text("\n".join(body), encoding="utf-8")
    return path
