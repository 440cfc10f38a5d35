"""Check every internal link of the built site: ``python docs/check_links.py build/site``.

Each ``href``/``src`` in every HTML page that is not external (``http(s):``, ``mailto:``, ...) must name a file of
the site, and its ``#anchor`` an ``id`` in that page. External links are counted, not fetched (CI is offline).
Exit status 1 and one line per broken link when any is broken.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src") and tag not in ("link", "script"):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _target(site: Path, page: Path, url: str) -> Path:
    path = unquote(urlsplit(url).path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target.resolve()
    return target / "index.html" if target.is_dir() or url.split("#")[0].endswith("/") else target


def broken_links(site: str | Path) -> tuple[list[str], int, int]:
    """(broken link descriptions, internal links checked, external links seen) for the built site."""
    site = Path(site).resolve()
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    broken: list[str] = []
    internal = external = 0
    for page, parsed in pages.items():
        for url in parsed.links:
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url):
                external += 1
                continue
            internal += 1
            target = page if url.startswith("#") else _target(site, page, url)
            fragment = unquote(urlsplit(url).fragment)
            where = f"{page.relative_to(site)} -> {url}"
            if not target.exists():
                broken.append(f"{where}: no such file")
            elif fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if fragment not in ids:
                    broken.append(f"{where}: no anchor #{fragment}")
    return broken, internal, external


def main(argv: list[str]) -> int:
    site = argv[1] if len(argv) > 1 else "build/site"
    broken, internal, external = broken_links(site)
    for line in broken:
        print(line)
    print(f"link check: {internal} internal links checked, {len(broken)} broken; {external} external links not fetched")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
