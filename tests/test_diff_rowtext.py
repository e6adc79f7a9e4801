"""The rows of a diff file are written byte for byte as ``json.dumps(row, ensure_ascii=False)``.

Each node builds a differing row's JSON text itself, and ACE copies it into the
file; this proves the text is exactly what encoding the row in Python gives, for
the characters JSON escapes (quotes, backslashes, every control character) and
those it leaves alone, in values and in column names.
"""

from __future__ import annotations

import json
from typing import Any

from diff_helpers import NODES, execute, query, table_diff

ODD = "".join(chr(c) for c in range(1, 32)) + "\"\\/'%\u007f\u0080\u00e9\u2028\u2029\u20ac\U0001f600"
COLUMNS = ["id", 'say "hi"', "100%", "na\u00efve", "back\\slash", "tab\there", "t"]
TABLE_DDL = ("CREATE TABLE rowtext (id int PRIMARY KEY, \"say \"\"hi\"\"\" text, \"100%\" text, "
             "\"na\u00efve\" text, \"back\\slash\" text, \"tab\there\" text, t text[])")


def test_every_row_line_is_the_rows_json_dumps(pg_cluster: Any) -> None:
    rows = [(1, ODD, "", None, "\\", "x", ["a b", None, ODD]),
            (2, "plain", "50%", "\u00e9", None, "\t", []),
            (3, "same everywhere", "", "", "", "", None)]
    for i in range(len(NODES)):
        dsn = pg_cluster.node_dsn(i)
        execute(dsn, ["DROP TABLE IF EXISTS rowtext", TABLE_DDL])
        mine = rows if i != 1 else [(r[0], f"{r[1]} on n2", *r[2:]) for r in rows[:2]]
        execute(dsn, [("INSERT INTO rowtext VALUES (%s, %s, %s, %s, %s, %s, %s)", r)
                      for r in mine])
    run = table_diff("public.rowtext")
    assert run.code == 1, (run.stdout, run.stderr)
    assert run.diff_path is not None
    text = run.diff_path.read_text(encoding="utf-8")

    # (%% : the test's own query runs through psycopg2's parameter merging)
    select = ", ".join('"{}"::text'.format(c.replace('"', '""').replace("%", "%%"))
                       for c in COLUMNS)
    expected = []
    for pair in ("n1/n2", "n2/n3"):
        for node in pair.split("/"):
            got = query(pg_cluster.node_dsn(NODES.index(node)),
                        f"SELECT {select}, pg_catalog.to_char(pg_catalog.timezone('UTC', "
                        "pg_catalog.pg_xact_commit_timestamp(xmin)), "
                        "'YYYY-MM-DD HH24:MI:SS.US') || '+00' FROM rowtext ORDER BY id",
                        pinned=True)  # noqa: S608
            for *values, commit_ts in got:
                # then the two provenance fields: a local change, so the node itself
                row = {**dict(zip(COLUMNS, values, strict=True)), "_ace_commit_ts": commit_ts,
                       "_ace_origin": node}
                if row["id"] in {"1", "2", "3"} and (node != "n2" or row["id"] != "3"):
                    expected.append(json.dumps(row, ensure_ascii=False))
    # every row but key 3 (missing on n2) differs on n1/n2 and n2/n3; n1/n3 agree
    lines = [ln.strip().rstrip(",") for ln in text.split("\n") if ln.startswith("        {")]
    assert sorted(lines) == sorted(expected)
    assert "n1/n3" not in json.loads(text)["diffs"]
