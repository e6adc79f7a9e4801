"""Building small diff views from hand-written partial files, and reading HTML back as a tree."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ace_shared.diff.partials import PartialsView
from ace_shared.diff.workdir import DiffRecord

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr"}


def partials_view(folder: Path, nodes: Sequence[str], columns: Sequence[tuple[str, str]],
                  key: Sequence[str],
                  batches: Sequence[Sequence[dict[str, dict[str, Any] | None]]]) -> PartialsView:
    """A view over partial files written from ``batches`` (one file per batch of records).

    Each record is ``{node: row or None}``; its key is read from the first row present.
    """
    paths = []
    for i, batch in enumerate(batches):
        path = folder / f"part_{i:09d}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for rows in batch:
                present = next(r for r in rows.values() if r is not None)
                rec = DiffRecord.from_rows(tuple(present[k] for k in key), dict(rows))
                fh.write(rec.to_line() + "\n")
        paths.append(path)
    return PartialsView(nodes, [{"name": n, "type": t} for n, t in columns], key, paths)


@dataclass
class Element:
    """One element of a parsed page: enough of a DOM to ask what a reader would see."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Element]:
        yield self
        for c in self.children:
            if isinstance(c, Element):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None,
                 where: Callable[[Element], bool] | None = None, **attrs: str) -> list[Element]:
        """Descendants (and self) matching the tag, a class, attribute values and a predicate."""
        out = []
        for el in self.iter():
            if tag is not None and el.tag != tag:
                continue
            if cls is not None and cls not in el.classes:
                continue
            if any(el.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            if where is not None and not where(el):
                continue
            out.append(el)
        return out

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, cls, None, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in VOID_TAGS:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


CHROMIUM = shutil.which("chromium")  # renders the HTML reports where installed


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True)
