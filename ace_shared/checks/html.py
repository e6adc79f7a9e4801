"""The HTML page of a cluster check: one self-contained file, in the table-diff report's style.

It reuses that report's stylesheet (no external resources; works with
JavaScript off, the script only adds a filter). The page opens with the
check's banner (match or differ), its facts and a table of node pairs, then
one section per pair listing each difference with the value on each node
(``missing on NODE`` in the missing colour); repset-diff adds the per-table
outcomes, spock-diff each node's configuration and the hints. Every value and
name is HTML-escaped.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, TextIO

from ace_shared.atomicfile import atomic_text_file
from ace_shared.difffile.htmlassets import CSS
from ace_shared.difffile.htmlreport import esc
from ace_shared.words import and_list, plural, utc_time

EXTRA_CSS = """
table.entries{border-collapse:collapse;width:100%;table-layout:fixed;margin-top:8px}
table.entries th,table.entries td{border:1px solid var(--line);padding:4px 8px;text-align:left;
vertical-align:top}
table.entries thead th{background:#f0f2f5}
table.entries td.v{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;
white-space:pre-wrap;word-break:break-word;background:var(--chg)}
table.entries td.absent{background:var(--miss);color:var(--miss-ink);font-style:italic}
table.entries tr.identical td,table.entries tr.skipped td{color:var(--mute)}
table.entries tr.failed td.o{color:var(--miss-ink);font-weight:600}
table.entries tr.differs td.o{color:#6b4e00;font-weight:600}
"""

SCRIPT = """
(function(){document.addEventListener('input',function(e){
var f=e.target.closest('input.filter');if(!f){return;}var q=f.value.toLowerCase();
document.querySelectorAll('table.entries tbody tr').forEach(function(r){
r.hidden=q&&r.textContent.toLowerCase().indexOf(q)<0;});});})();
"""

TITLES = {"schema-diff": "Schema diff", "repset-diff": "Repset diff",
          "spock-diff": "Replication configuration"}


def _value(value: Any) -> str:
    if value is None:
        return '<span class="null" title="not set">NULL</span>'
    if isinstance(value, (list, dict)):
        return esc(json.dumps(value, ensure_ascii=False))
    return esc(value)


def _subject(result: dict[str, Any]) -> str:
    if result["command"] == "schema-diff":
        return f' of schema <span class="tname">{esc(result["schema_name"])}</span>'
    if result["command"] == "repset-diff":
        return f' of set <span class="tname">{esc(result["repset_name"])}</span>'
    return ""


def _differs(result: dict[str, Any]) -> bool:
    return bool(result.get("exit_code", 0) != 0)


def _head(fh: TextIO, result: dict[str, Any]) -> None:
    title = TITLES[result["command"]]
    cluster = result["cluster_name"]
    fh.write('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
             f"<title>ACE {esc(title.lower())} on {esc(cluster)}</title>\n"
             f"<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n"
             f'<header class="report-head">\n<h1>{esc(title)}{_subject(result)} '
             f"on cluster {esc(cluster)}</h1>\n")
    nodes = ", ".join(result["nodes"])
    if _differs(result):
        total, _ = difference_counts(result)
        failed = sum(1 for t in result.get("tables") or () if t["outcome"] == "failed")
        trouble = f" {plural(failed, 'table')} could not be compared." if failed else ""
        fh.write('<div class="banner mismatch" role="status"><strong>The nodes differ.</strong> '
                 f"{esc(plural(total, 'difference'))} between {esc(and_list(result['nodes']))}."
                 f"{esc(trouble)}</div>\n")
    else:
        fh.write('<div class="banner match" role="status"><strong>All nodes match.</strong> '
                 f"Nothing differs between {esc(nodes)}.</div>\n")
    facts = [("Cluster", cluster), ("Database", result.get("database")), ("Nodes", nodes),
             ("Started", utc_time(result.get("start_time"))), ("Time taken", f"{result.get('time_taken')} s"),
             ("Result file", result.get("result_file")), ("Task", result.get("task_id"))]
    fh.write('<dl class="facts">\n')
    for label, value in facts:
        fh.write(f"<dt>{esc(label)}</dt><dd>{esc(value if value is not None else '-')}</dd>\n")
    fh.write("</dl>\n")
    _pair_table(fh, result)
    fh.write('<div class="tools" style="display:flex"><input class="filter" type="search" '
             'placeholder="Filter lines by any text" aria-label="Filter lines"></div>\n'
             "</header>\n<main>\n")


def _split_on(pairs: list[tuple[str, str]], counts: dict[tuple[str, str], int],
              has: set[str], lacks: set[str]) -> bool:
    """Count one difference for every pair with one node in ``has`` and the other in ``lacks``."""
    hit = False
    for a, b in pairs:
        if (a in has and b in lacks) or (a in lacks and b in has):
            counts[(a, b)] += 1
            hit = True
    return hit


def difference_counts(result: dict[str, Any]) -> tuple[int, dict[tuple[str, str], int]]:
    """How many things differ in all, and between each pair of nodes.

    Everything that makes the check say "differ" counts, once in the total and once for
    every pair it sets apart: an object or setting that differs (schema-diff,
    spock-diff), a table whose rows differ or that some nodes lack, a table in the set
    on some nodes only, and a node without the set (repset-diff).
    """
    nodes = list(result["nodes"])
    pairs = list(itertools.combinations(nodes, 2))
    counts = {pair: 0 for pair in pairs}
    total = 0
    for e in result.get("differences", []):
        key = (e["nodes"][0], e["nodes"][1])
        counts[key] = counts.get(key, 0) + 1
        total += 1
    for t in result.get("tables") or ():
        hit = False
        if t["outcome"] == "differs":
            for pair_text, rows in (t.get("diff_rows_by_pair") or {}).items():
                a, _, b = pair_text.partition("/")
                key = (a, b) if (a, b) in counts else (b, a)
                if rows and key in counts:
                    counts[key] += 1
                    hit = True
        if t.get("missing_on"):
            lacking = set(t["missing_on"])
            hit = _split_on(pairs, counts, set(nodes) - lacking, lacking) or hit
        total += hit
    for note in result.get("membership_differences", []):
        total += _split_on(pairs, counts, set(note["in_set_on"]), set(note["not_in_set_on"]))
    without = set(result.get("nodes_without_set", []))
    for node in without:
        total += _split_on(pairs, counts, set(nodes) - without, {node})
    return total, counts


def _pair_table(fh: TextIO, result: dict[str, Any]) -> None:
    _, counts = difference_counts(result)
    listed = {(e["nodes"][0], e["nodes"][1]) for e in result.get("differences", [])}
    fh.write('<table class="pairs"><thead><tr><th>Node pair</th><th>Differences</th></tr>'
             "</thead><tbody>\n")
    for i, (a, b) in enumerate(itertools.combinations(result["nodes"], 2)):
        c = counts.get((a, b), 0)
        if c:
            target = f"pair-{i}" if (a, b) in listed else "tables"
            fh.write(f'<tr><td><a href="#{target}">{esc(a)} / {esc(b)}</a></td>'
                     f'<td class="n">{c:,}</td></tr>\n')
        else:
            fh.write(f'<tr class="same"><td>{esc(a)} / {esc(b)}</td>'
                     '<td class="n">0 (match)</td></tr>\n')
    fh.write("</tbody></table>\n")


def _pairs(fh: TextIO, result: dict[str, Any]) -> None:
    for i, (a, b) in enumerate(itertools.combinations(result["nodes"], 2)):
        entries = [e for e in result.get("differences", []) if e["nodes"] == [a, b]]
        if not entries:
            continue
        fh.write(f'<section class="pair" id="pair-{i}"><h2><span class="tag l">{esc(a)}</span>'
                 f'<span class="vs">compared with</span><span class="tag r">{esc(b)}</span>'
                 f'<span class="count">{esc(plural(len(entries), "difference"))}</span></h2>\n'
                 '<table class="entries"><thead><tr><th style="width:11%">Kind</th>'
                 '<th style="width:22%">Object</th><th style="width:15%">What differs</th>'
                 f"<th>{esc(a)}</th><th>{esc(b)}</th></tr></thead><tbody>\n")
        for e in entries:
            cells = []
            for node in (a, b):
                if node not in e["values"]:
                    cells.append('<td class="v">-</td>')
                elif e.get("missing_on") == node:
                    cells.append(f'<td class="absent">missing on {esc(node)}</td>')
                else:
                    cells.append(f'<td class="v">{_value(e["values"][node])}</td>')
            fh.write(f"<tr><td>{esc(e['kind'])}</td><td><code>{esc(e['identity'])}</code></td>"
                     f"<td>{esc(e['differs'])}</td>{''.join(cells)}</tr>\n")
        fh.write("</tbody></table></section>\n")


def _tables(fh: TextIO, result: dict[str, Any]) -> None:
    tables = result.get("tables")
    if tables is None:
        return
    fh.write('<section class="pair" id="tables"><h2>Tables</h2><table class="entries"><thead><tr>'
             '<th style="width:25%">Table</th><th style="width:14%">Outcome</th><th>Details</th>'
             "</tr></thead><tbody>\n")
    for t in tables:
        details = []
        if t.get("diff_rows_by_pair"):
            details.append(", ".join(f"{p}: {plural(n, 'row')}"
                                     for p, n in t["diff_rows_by_pair"].items()))
        for key, label in (("reason", ""), ("diff_file", "diff file ")):
            if t.get(key):
                details.append(f"{label}{t[key]}")
        if t.get("missing_on"):
            details.append(f"missing on {and_list(t['missing_on'])}")
        if t.get("membership"):
            details.append(f"not in the set on {and_list(t['membership']['not_in_set_on'])}")
        css = t["outcome"].split()[0]
        fh.write(f'<tr class="{esc(css)}"><td><code>{esc(t["table"])}</code></td>'
                 f'<td class="o">{esc(t["outcome"])}</td><td>{esc("; ".join(details))}</td></tr>\n')
    fh.write("</tbody></table></section>\n")


def _config(fh: TextIO, result: dict[str, Any]) -> None:
    for node, cfg in result.get("node_config", {}).items():
        fh.write(f'<section class="pair"><h2>{esc(node)}: {esc(cfg["system"])} node '
                 f'{esc(cfg["identity"])}</h2><table class="entries"><thead><tr>'
                 "<th>Replication set</th><th>Flags</th><th>Tables</th></tr></thead><tbody>\n")
        for s in cfg["sets"]:
            flags = ", ".join(k for k, v in s["flags"].items() if v)
            fh.write(f"<tr><td>{esc(s['name'])}</td><td>{esc(flags)}</td>"
                     f"<td>{esc(', '.join(s['tables']))}</td></tr>\n")
        fh.write("</tbody></table><table class=\"entries\"><thead><tr><th>Subscription</th>"
                 "<th>Provider</th><th>Status</th><th>Sets</th><th>Forward origins</th>"
                 "<th>Apply delay</th></tr></thead><tbody>\n")
        for s in cfg["subscriptions"]:
            fh.write(f"<tr><td>{esc(s['name'])}</td><td>{esc(s['provider'])}</td>"
                     f"<td>{esc(s['status'])}</td><td>{esc(', '.join(s['sets']))}</td>"
                     f"<td>{esc(', '.join(s['forward_origins']))}</td>"
                     f"<td>{esc(s['apply_delay'])}</td></tr>\n")
        fh.write("</tbody></table></section>\n")
    if result.get("hints"):
        fh.write('<section class="pair"><h2>Hints</h2><ul>\n')
        for h in result["hints"]:
            fh.write(f"<li>{esc(h['node'])}: {esc(h['hint'])}"
                     + (f": <code>{esc(h['table'])}</code>" if h.get("table") else "") + "</li>\n")
        fh.write("</ul></section>\n")


def write_html(path: Path, result: dict[str, Any]) -> None:
    """Write the page for a schema-diff, repset-diff or spock-diff result."""
    with atomic_text_file(path) as fh:
        _head(fh, result)
        _tables(fh, result)
        _pairs(fh, result)
        _config(fh, result)
        fh.write(f"</main>\n<footer>ACE {esc(result['command'])}</footer>\n"
                 f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
