"""The HTML rendering of a table diff: one self-contained file a person can open anywhere.

The page has no external resources: its CSS and its few lines of JavaScript
are inline, and it works with JavaScript off (the expandable lines are plain
``<details>`` elements; the script only adds expand-all, collapse-all and a
filter). It starts with the diff's summary (a banner when the diff is partial,
another when the nodes match) and then has one section per node pair that
differs. Each section lists one line per differing key: the key columns
first, then every other column with both nodes' values where they differ
(the cell marked ``changed``) or the one shared value where they agree.
The line's first column, pinned at the left edge while the grid scrolls,
names the differing columns and shows both values of each, so they can be
read without scrolling sideways however many columns the table has. A row
one node lacks is marked ``missing on <node>``. NULL is shown as a ``NULL``
badge, the empty string as an ``empty`` badge, so the two are never confused.
Opening a line shows both full rows side by side, with each side's commit
time and origin under them where known; the grid cuts long values.

The file is streamed pair by pair and row by row, never holding more than one
row in memory, and appears at its path only once complete. Every value, name
and summary field is HTML-escaped. A pair with more than ``max_rows_per_pair``
differing keys shows only the first ones, saying so (all are in the diff file).
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ace_shared.atomicfile import atomic_text_file
from ace_shared.difffile.format import COMMIT_TS_FIELD, ORIGIN_FIELD
from ace_shared.difffile.htmlassets import CSS, SCRIPT
from ace_shared.difffile.view import DiffView, PairRow
from ace_shared.nodes.filter import display_filter

# each side's provenance (the diff file's reserved fields), under the row's columns
PROVENANCE = (("commit time", COMMIT_TS_FIELD), ("origin", ORIGIN_FIELD))
GRID_VALUE_CHARS = 60
STATUS_WIDTH = "min(26rem, 45vw)"
MAX_ROWS_PER_PAIR = 10_000

Row = dict[str, Any]


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_value(value: str | None, limit: int | None = None) -> str:
    """A value as HTML: NULL and the empty string as badges, text escaped and cut at ``limit``."""
    if value is None:
        return '<span class="null" title="SQL NULL">NULL</span>'
    if value == "":
        return '<span class="empty" title="empty string (not NULL)">empty</span>'
    if limit is not None and len(value) > limit:
        return (f'{esc(value[:limit])}<span class="cut" title="{len(value):,} characters; '
                f'open the line to see all">\u2026</span>')
    return esc(value)


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else esc(value if value is not None else "-")


def _fmt_time(value: Any) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return esc(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return esc(moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _ordered_columns(view: DiffView) -> list[dict[str, str]]:
    """Key columns first (in key order), then the rest in table order."""
    by_name = {c["name"]: c for c in view.columns}
    keys = [by_name.get(k, {"name": k, "type": ""}) for k in view.key]
    return keys + [c for c in view.columns if c["name"] not in set(view.key)]


def _head(fh: TextIO, view: DiffView, summary: dict[str, Any],
          pairs: Sequence[tuple[str, str, int]]) -> None:
    table = summary.get("table") or summary.get("table_name") or "?"
    cluster = summary.get("cluster_name") or "?"
    nodes = list(view.nodes) or list(summary.get("nodes", []))
    fh.write('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
             f"<title>ACE table diff: {esc(table)} on {esc(cluster)}</title>\n"
             "<script>document.documentElement.classList.add('js');</script>\n"
             f"<style>{CSS}</style>\n</head>\n<body>\n")
    fh.write('<header class="report-head">\n'
             f'<h1>Table diff of <span class="tname">{esc(table)}</span> '
             f"on cluster {esc(cluster)}</h1>\n")
    total = sum(c for _, _, c in pairs)
    if summary.get("diff_partial"):
        reason = summary.get("partial_reason") or "The diff stopped before checking every row."
        fh.write('<div class="banner partial" role="alert"><strong>Partial diff.</strong> '
                 f"{esc(reason)}</div>\n")
    if not pairs:
        fh.write('<div class="banner match" role="status"><strong>All nodes match.</strong> '
                 f"No row of {esc(table)} differs between {esc(', '.join(nodes))}.</div>\n")
    else:
        diff_rows = summary.get("diff_rows", total)
        fh.write('<div class="banner mismatch" role="status"><strong>The nodes differ.</strong> '
                 f"{_plural(diff_rows, 'differing row') if isinstance(diff_rows, int) else esc(diff_rows)}; {_plural(len(pairs), 'node pair')} "
                 f"{'differs' if len(pairs) == 1 else 'differ'}.</div>\n")
    facts = [
        ("Cluster", esc(cluster)),
        ("Database", esc(summary.get("database") or "-")),
        ("Table", esc(table)),
        ("Nodes", esc(", ".join(nodes))),
        ("Primary key", esc(", ".join(view.key))),
        ("Rows checked", _fmt_int(summary.get("total_rows_checked"))),
        ("Started", _fmt_time(summary.get("start_time"))),
        ("Finished", _fmt_time(summary.get("end_time"))),
        ("Time taken", esc(f"{summary['time_taken']} s") if "time_taken" in summary else "-"),
        ("Key ranges checked",
         f"{_fmt_int(summary.get('ranges_checked'))} of {_fmt_int(summary.get('ranges_total'))}"
         if "ranges_total" in summary else "-"),
    ]
    if summary.get("table_filter"):
        facts.append(("Row filter",
                      f"<code>{esc(display_filter(summary['table_filter']))}</code>"))
    if summary.get("diff_file"):
        facts.append(("Diff file", f"<code>{esc(summary['diff_file'])}</code>"))
    if summary.get("task_id"):
        facts.append(("Task", f"<code>{esc(summary['task_id'])}</code>"))
    fh.write('<dl class="facts">\n')
    for label, value in facts:
        fh.write(f"<dt>{esc(label)}</dt><dd>{value}</dd>\n")
    fh.write("</dl>\n")
    _pair_table(fh, nodes, pairs)
    fh.write('<div class="legend"><span><span class="sw" style="background:var(--key)"></span>'
             'key column</span><span><span class="sw" style="background:var(--chg);'
             'box-shadow:inset 3px 0 0 var(--chg-edge)"></span>value differs (top: left node, '
             'bottom: right node)</span><span><span class="sw" style="background:var(--miss)">'
             '</span>row missing on one node</span>'
             '<span><span class="null">NULL</span> SQL NULL</span>'
             '<span><span class="empty">empty</span> empty string</span>'
             '<span>Click a line to see both full rows.</span></div>\n</header>\n<main>\n')


def _pair_table(fh: TextIO, nodes: Sequence[str], pairs: Sequence[tuple[str, str, int]]) -> None:
    counts = {(a, b): (i, c) for i, (a, b, c) in enumerate(pairs)}
    fh.write('<table class="pairs"><thead><tr><th>Node pair</th><th>Differing rows</th></tr>'
             "</thead><tbody>\n")
    for a, b in itertools.combinations(nodes, 2):
        if (a, b) in counts:
            i, c = counts[(a, b)]
            fh.write(f'<tr><td><a href="#pair-{i}">{esc(a)} / {esc(b)}</a></td>'
                     f'<td class="n">{c:,}</td></tr>\n')
        else:
            fh.write(f'<tr class="same"><td>{esc(a)} / {esc(b)}</td>'
                     '<td class="n">0 (match)</td></tr>\n')
    fh.write("</tbody></table>\n")


def _grid_template(columns: Sequence[dict[str, str]], n_key: int) -> str:
    """Fixed widths, so every line lines up; the last column takes what room is left."""
    parts = [STATUS_WIDTH]
    parts += ["11rem"] * n_key
    parts += ["15rem"] * (len(columns) - n_key)
    parts[-1] = f"minmax({parts[-1]},1fr)"
    return " ".join(parts)


def _section_open(fh: TextIO, index: int, left: str, right: str, count: int,
                  columns: Sequence[dict[str, str]], n_key: int, shown: int,
                  diff_file: str | None) -> None:
    fh.write(f'<section class="pair" id="pair-{index}" data-pair="{esc(left)}/{esc(right)}" '
             f'style="--cols:{_grid_template(columns, n_key)}">\n'
             f'<h2><span class="tag l">{esc(left)}</span><span class="vs">compared with</span>'
             f'<span class="tag r">{esc(right)}</span>'
             f'<span class="count">{_plural(count, "differing row")}</span></h2>\n')
    if shown < count:
        where = f" in the diff file <code>{esc(diff_file)}</code>" if diff_file else \
            " in the JSON diff file"
        fh.write(f'<p class="note">This report shows the first {shown:,} of {count:,} differing '
                 f"rows of this pair, in key order; all of them are{where}.</p>\n")
    fh.write('<div class="tools"><button type="button" data-act="expand">Expand all</button>'
             '<button type="button" data-act="collapse">Collapse all</button>'
             '<input class="filter" type="search" placeholder="Filter lines by any text" '
             'aria-label="Filter lines">'
             '<select class="kind" aria-label="Kind of difference"><option value="">All lines'
             '</option><option value="changed">Values differ</option>'
             '<option value="missing">Missing rows</option></select>'
             '<span class="shown"></span></div>\n'
             '<div class="scroll"><div class="grid" role="table">\n<div class="grid-head" '
             'role="row"><div>Difference</div>')
    for i, col in enumerate(columns):
        cls = ' class="key"' if i < n_key else ""
        fh.write(f'<div{cls} title="{esc(col["name"])}">{esc(col["name"])}'
                 f'<span class="type">{esc(col.get("type", ""))}</span></div>')
    fh.write("</div>\n")


def _line(fh: TextIO, pr: PairRow, left: str, right: str,
          columns: Sequence[dict[str, str]], n_key: int) -> None:
    names = [c["name"] for c in columns]
    lrow, rrow = pr.left, pr.right
    if lrow is not None and rrow is not None:
        changed = {n for n in names if lrow.get(n) != rrow.get(n)}
        kind = "changed"
        changed_names = [n for n in names if n in changed]
        badge = ('<span class="badge changed">differs</span> <span class="which" '
                 f'title="{esc(", ".join(changed_names))}">{esc(", ".join(changed_names))}</span>'
                 + _delta(lrow, rrow, left, right, changed_names))
        missing_on = None
    else:
        changed = set()
        kind = "missing"
        missing_on = left if lrow is None else right
        badge = f'<span class="badge missing">missing on {esc(missing_on)}</span>'
    present: Row = lrow if lrow is not None else (rrow or {})
    fh.write(f'<details class="line {kind}" data-key="{esc(json.dumps(list(pr.key)))}"')
    if missing_on is not None:
        fh.write(f' data-missing-on="{esc(missing_on)}"')
    fh.write(f'><summary role="row"><div class="status"><span class="tw"></span>{badge}</div>')
    for i, name in enumerate(names):
        attr = f' data-col="{esc(name)}"'
        if i < n_key:
            fh.write(f'<div class="cell key"{attr}>'
                     f"{render_value(present.get(name), GRID_VALUE_CHARS)}</div>")
        elif name in changed:
            fh.write(f'<div class="cell changed"{attr}><span class="v"><span class="tag l">'
                     f"{esc(left)}</span>{render_value((lrow or {}).get(name), GRID_VALUE_CHARS)}"
                     f'</span><span class="v"><span class="tag r">{esc(right)}</span>'
                     f"{render_value((rrow or {}).get(name), GRID_VALUE_CHARS)}</span></div>")
        else:
            fh.write(f'<div class="cell same"{attr}>'
                     f"{render_value(present.get(name), GRID_VALUE_CHARS)}</div>")
    fh.write("</summary>\n")
    _full_rows(fh, lrow, rrow, left, right, columns, n_key, changed)
    fh.write("</details>\n")


def _delta(lrow: Row, rrow: Row, left: str, right: str, names: Sequence[str]) -> str:
    """Each differing column with both values, in the pinned first column of the line."""
    parts = ['<span class="delta">']
    for name in names:
        parts.append(f'<span class="d" data-delta-col="{esc(name)}"><span class="dn">{esc(name)}'
                     f'</span><span class="dv"><span class="tag l">{esc(left)}</span>'
                     f"{render_value(lrow.get(name), GRID_VALUE_CHARS)}</span>"
                     f'<span class="dv"><span class="tag r">{esc(right)}</span>'
                     f"{render_value(rrow.get(name), GRID_VALUE_CHARS)}</span></span>")
    parts.append("</span>")
    return "".join(parts)


def _full_rows(fh: TextIO, lrow: Row | None, rrow: Row | None, left: str, right: str,
               columns: Sequence[dict[str, str]], n_key: int, changed: set[str]) -> None:
    fh.write('<div class="full"><table class="sides"><thead><tr><th class="col">Column</th>'
             f'<th><span class="tag l">{esc(left)}</span>{"" if lrow else "no row"}</th>'
             f'<th><span class="tag r">{esc(right)}</span>{"" if rrow else "no row"}</th>'
             "</tr></thead><tbody>")
    for i, col in enumerate(columns):
        name = col["name"]
        cls = "key" if i < n_key else ("changed" if name in changed else "")
        fh.write(f'<tr class="{cls}" data-col="{esc(name)}"><th class="col">{esc(name)}'
                 f'<span class="typ">{esc(col.get("type", ""))}</span></th>')
        for node, row in ((left, lrow), (right, rrow)):
            if row is None:
                fh.write(f'<td class="absent">no row on {esc(node)}</td>')
            else:
                fh.write(f"<td><code>{render_value(row.get(name))}</code></td>")
        fh.write("</tr>")
    for label, field in PROVENANCE:
        if not any(row is not None and row.get(field) is not None for row in (lrow, rrow)):
            continue
        fh.write(f'<tr class="meta" data-meta="{esc(field)}"><th class="col">{esc(label)}</th>')
        for row in (lrow, rrow):
            fh.write("<td></td>" if row is None else
                     f"<td><code>{render_value(row.get(field))}</code></td>")
        fh.write("</tr>")
    fh.write("</tbody></table></div>\n")


def _section_close(fh: TextIO) -> None:
    fh.write("</div></div>\n</section>\n")


def write_html(path: Path, view: DiffView, summary: dict[str, Any],
               max_rows_per_pair: int = MAX_ROWS_PER_PAIR) -> None:
    """Stream the HTML report of ``view`` to ``path``; it appears there only once complete."""
    pairs = view.pairs()
    columns = _ordered_columns(view)
    n_key = len(view.key)
    with atomic_text_file(path) as fh:
        _head(fh, view, summary, pairs)
        for index, (left, right, count) in enumerate(pairs):
            shown = min(count, max_rows_per_pair)
            _section_open(fh, index, left, right, count, columns, n_key, shown,
                          summary.get("diff_file"))
            rows = view.pair_rows(left, right)
            try:
                for pr in itertools.islice(rows, max_rows_per_pair):
                    _line(fh, pr, left, right, columns, n_key)
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
            _section_close(fh)
        generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        fh.write(f"</main>\n<footer>Written by ACE, the Anti-Chaos Engine, at {generated}."
                 f"</footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n")
