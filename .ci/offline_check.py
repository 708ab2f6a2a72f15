"""The built book read offline, in a real browser: `make test` runs this after the build.

    python .ci/offline_check.py _build/test/_build/html

Every chapter page and the claims page is opened from disk in headless Chromium (Debian's
`chromium`), with every host name made unresolvable (no network), and its rendered DOM is
checked: MathJax has typeset every formula (each `math` element holds an `mjx-container`, from
the local copy that sphinx-mathjax-offline ships), no image or script is fetched from a remote
server, every image is a file of the build, and the page shows a claims table. A page that fails
is listed with its reasons and the script exits 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

PAGES = [
    "book/01_nonlinear_icl",
    "book/02_implicit_finetuning",
    "book/03_induction_cliff",
    "book/04_contextual_blocks",
    "book/05_four_lenses",
    "book/claims",
]
BROWSER_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=30000",
    "--dump-dom",
]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("no headless Chromium found: install Debian's `chromium` (make test does, with apt-get)")


def rendered_dom(page: Path) -> str:
    out = subprocess.run(
        [browser(), *BROWSER_FLAGS, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    if not out.stdout.strip():
        raise RuntimeError(f"{browser()} returned no DOM for {page}: {out.stderr[-500:]}")
    return out.stdout


class Survey(HTMLParser):
    """Math elements and whether each holds a typeset container; images, scripts, tables."""

    VOID = {
        "img",
        "br",
        "hr",
        "meta",
        "link",
        "input",
        "source",
        "wbr",
        "col",
        "area",
        "base",
        "embed",
        "param",
        "track",
    }

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, int | None]] = []  # (tag, index of the math element it opens)
        self.math: list[bool] = []  # typeset?
        self.images: list[str] = []
        self.remote: list[str] = []
        self.tables_with_verdicts = 0
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "mjx-container":
            for _, idx in reversed(self.stack):
                if idx is not None:
                    self.math[idx] = True
                    break
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        for key in ("src", "href") if tag in ("img", "script", "iframe") else ("src",):
            url = a.get(key) or ""
            if urlparse(url).scheme in ("http", "https") and tag in ("img", "script", "iframe"):
                self.remote.append(f"<{tag} {key}={url}>")
        if tag == "th":
            self._in_th = True
        if tag in self.VOID:
            return
        idx = None
        if "math" in classes and tag in ("span", "div"):
            self.math.append(False)
            idx = len(self.math) - 1
        self.stack.append((tag, idx))

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self._in_th and data.strip() == "verdict":
            self.tables_with_verdicts += 1


def check_page(html_root: Path, name: str) -> list[str]:
    page = html_root / f"{name}.html"
    if not page.exists():
        return [f"{page} is missing"]
    survey = Survey()
    survey.feed(rendered_dom(page))
    problems = []
    if not survey.math and name != "book/claims":  # every chapter has formulas; the claims page may not
        problems.append("no formula found")
    untypeset = survey.math.count(False)
    if untypeset:
        problems.append(f"{untypeset} of {len(survey.math)} formulas not typeset (raw TeX on the page)")
    problems += [f"remote resource {r}" for r in survey.remote]
    for src in survey.images:
        if urlparse(src).scheme in ("http", "https", "data"):
            continue  # remote ones are listed above; inline data is local by definition
        if not (page.parent / unquote(urlparse(src).path)).exists():
            problems.append(f"image {src} is not a file of the build")
    if survey.tables_with_verdicts == 0:
        problems.append("no claims table (a table with a 'verdict' column)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    root = Path(argv[0])
    failed = 0
    for name in PAGES:
        problems = check_page(root, name)
        failed += bool(problems)
        print(
            f"{name}: "
            + ("rendered offline: math typeset, local images, claims table" if not problems else "; ".join(problems))
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
