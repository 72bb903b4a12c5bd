"""Check a directory of built HTML for common publishing mistakes."""

import argparse
import os
import sys
from html.parser import HTMLParser
from urllib.parse import urlsplit


class PageScanner(HTMLParser):
    """Collects the title and the local links of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links = []
        self.has_title = False
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "title":
            self._in_title = True
        for name in ("href", "src"):
            value = attrs.get(name)
            if value and is_local(value):
                self.links.append(value)

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title and data.strip():
            self.has_title = True


def is_local(url):
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("#")


def resolve(root, page, link):
    """Map a link found in `page` to the file it should point at."""
    path = urlsplit(link).path
    if path.startswith("/"):
        target = os.path.join(root, path.lstrip("/"))
    else:
        target = os.path.join(os.path.dirname(page), path)
    if path.endswith("/") or os.path.isdir(target):
        target = os.path.join(target, "index.html")
    return os.path.normpath(target)


def check_site(root):
    problems = []
    if not os.path.isfile(os.path.join(root, "index.html")):
        problems.append("index.html: missing at the site root")
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".html"):
                continue
            page = os.path.join(dirpath, name)
            rel = os.path.relpath(page, root)
            scanner = PageScanner()
            with open(page, encoding="utf-8") as handle:
                scanner.feed(handle.read())
            if not scanner.has_title:
                problems.append(f"{rel}: no <title>")
            if name == "404.html":
                continue  # served at any path; root-absolute links are expected
            for link in scanner.links:
                if not os.path.exists(resolve(root, page, link)):
                    problems.append(f"{rel}: broken link {link}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lantern", description=__doc__)
    parser.add_argument("site", help="directory holding the built site")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.site):
        print(f"lantern: {args.site}: not a directory", file=sys.stderr)
        return 2
    problems = check_site(args.site)
    for problem in problems:
        print(problem)
    print(f"lantern: {len(problems)} problem(s) found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
