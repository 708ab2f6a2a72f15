"""The built book read offline, in a real browser: `make test` runs this after the build.

    python .ci/offline_check.py _build/test/_build/html

Every chapter page and the claims page is opened from disk in headless Chromium (Debian's
`chromium`), with every host name made unresolvable (no network), and its rendered DOM is
checked: MathJax has typeset every formula (each `math` element holds an `mjx-container`, from
the local copy that sphinx-mathjax-offline ships), no image or script is fetched from a remote
server, every image is a file of the build, and the page shows a claims table. A page that fails
is listed with its reasons and the script exits 1.

Figures a reader scrubs (`iclbook.plots.Scrubber`: frames and a range slider in inline HTML/JS)
are driven too. The page is opened through a copy of itself, in its own folder, with one test
script added at the end: once the page has loaded, the script moves each slider to another frame,
fires the `input` event a reader's drag fires, and writes what happened into the DOM (which frame
is shown, whether the image and its label changed). Each slider must show the frame it was moved
to, with a new image and label; the pages of `SCRUBBER_PAGES` must have at least one slider. The
same script clicks every exercise's "Show solution" toggle: each must be closed when the page
opens and show its code once clicked; the pages of `EXERCISE_PAGES` must have at least one. The
browser opens at 1400 pixels, a reader's window: on `OVERFLOW_PAGES` (the claims page) no table
may be wider than its box, and on every chapter no code cell may scroll sideways (the script
also reports how many characters a cell holds, which book/.ruff.toml's line length follows). Last, the script switches the theme to dark, as its switch does, and
measures the contrast of every table's text with what is behind it (WCAG AA, 4.5:1); every
figure of the book (the build's `_images`) must be opaque, or its lines vanish into a dark page.
"""

from __future__ import annotations

import json
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
SCRUBBER_PAGES = {"book/05_four_lenses"}  # the cliff explorer
OVERFLOW_PAGES = {"book/claims"}  # every column visible at the reader's width (1400 pixels)
MIN_CONTRAST = 4.5  # WCAG AA for text: the tables' text against what is behind it, in dark mode
EXERCISE_PAGES = {p for p in PAGES if p != "book/claims"}  # every chapter ends with exercises
CODE_PAGES = EXERCISE_PAGES  # every chapter: code cells within their box at 1400 pixels
DRIVER_ID = "iclbook-offline-check"
# moves every slider of the page to another frame as a reader would, and records what it saw
DRIVER = r"""<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var seen = [];
    document.querySelectorAll(".iclbook-scrubber").forEach(function (root) {
      var slider = root.querySelector("input[type=range]");
      var img = root.querySelector("img.iclbook-scrubber-frame");
      var label = root.querySelector("output");
      if (!slider || !img || !label) { seen.push({broken: true}); return; }
      var src = img.getAttribute("src"), text = label.textContent;
      var target = +slider.value === +slider.max ? 0 : +slider.max;
      slider.value = String(target);
      slider.dispatchEvent(new Event("input", {bubbles: true}));
      seen.push({frames: +slider.max + 1, target: target, shown: img.getAttribute("data-frame"),
                 image_changed: img.getAttribute("src") !== src, label_changed: label.textContent !== text});
    });
    var solutions = {count: 0, closed: 0, opened: 0};
    document.querySelectorAll("details").forEach(function (d) {
      var summary = d.querySelector("summary");
      if (!summary || summary.textContent.indexOf("Show solution") < 0) { return; }
      solutions.count += 1;
      if (!d.open) { solutions.closed += 1; }
      summary.click();
      var body = d.querySelector("pre");
      if (d.open && body && body.getBoundingClientRect().height > 0) { solutions.opened += 1; }
    });
    // layout at the reader's width (the browser opens at 1400 pixels): tables wider than their box
    var overflow = [], tables = document.querySelectorAll("table");
    tables.forEach(function (t, i) { if (t.scrollWidth > t.parentElement.clientWidth + 1) { overflow.push(i + 1); } });
    // code cells: lines wider than the cell (a horizontal scroll), and how many characters a cell holds
    var code = [], columns = null, cells = document.querySelectorAll("div.cell_input pre");
    cells.forEach(function (p, i) {
      if (!p.clientWidth) { return; }  // not laid out (a closed fold): nothing a reader sees
      if (p.scrollWidth > p.clientWidth + 1) { code.push(i + 1); }
      var probe = document.createElement("span");
      probe.textContent = "0000000000";
      p.appendChild(probe);
      var style = getComputedStyle(p), inner = p.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      var fit = Math.floor(inner / (probe.getBoundingClientRect().width / 10));
      p.removeChild(probe);
      if (columns === null || fit < columns) { columns = fit; }
    });
    // dark mode, as the theme's switch sets it: the contrast of every table's text with what is behind it
    document.documentElement.dataset.theme = "dark";
    document.documentElement.dataset.mode = "dark";
    function rgba(text) { var m = text.match(/[\d.]+/g) || [0, 0, 0, 0]; return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; }
    function lum(c) {
      var v = c.slice(0, 3).map(function (x) { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
      return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
    }
    function behind(el) {
      for (; el; el = el.parentElement) { var c = rgba(getComputedStyle(el).backgroundColor); if (c[3] > 0.5) { return c; } }
      return [255, 255, 255, 1];
    }
    var worst = null;
    document.querySelectorAll("table td, table th").forEach(function (cell, i) {
      if (i > 2000 || !cell.textContent.trim()) { return; }
      var a = lum(rgba(getComputedStyle(cell).color)), b = lum(behind(cell));
      var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (worst === null || ratio < worst) { worst = ratio; }
    });
    var out = document.createElement("div");
    out.id = "DRIVER_ID";
    out.setAttribute("data-layout", JSON.stringify({tables: tables.length, overflow: overflow, dark_contrast: worst,
                                                      code_cells: cells.length, code_overflow: code, code_columns: columns}));
    out.setAttribute("data-scrubbers", JSON.stringify(seen));
    out.setAttribute("data-solutions", JSON.stringify(solutions));
    document.body.appendChild(out);
  }, 200);
});
</script>""".replace("DRIVER_ID", DRIVER_ID)
BROWSER_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=30000",
    "--window-size=1400,1000",
    "--dump-dom",
]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("no headless Chromium found: install Debian's `chromium` (make test does, with apt-get)")


def rendered_dom(page: Path) -> str:
    """The DOM of ``page`` after its scripts ran, opened from disk without a network, through a
    copy of the page (in its folder, so relative links hold) that carries :data:`DRIVER`."""
    text = page.read_text(encoding="utf-8")
    at = text.rfind("</body>")
    driven = page.with_name(f".{page.stem}.offline-check.html")
    driven.write_text(text[:at] + DRIVER + text[at:] if at >= 0 else text + DRIVER, encoding="utf-8")
    try:
        out = subprocess.run(
            [browser(), *BROWSER_FLAGS, driven.resolve().as_uri()], capture_output=True, text=True, timeout=120
        )
    finally:
        driven.unlink(missing_ok=True)
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
        self.scrubbers: list[dict] | None = None  # what the driver saw; None: the driver did not run
        self.solutions: dict | None = None  # the exercises' solution toggles, as the driver saw them
        self.layout: dict | None = None  # tables that overflow, and their contrast in dark mode

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
        if tag == "div" and a.get("id") == DRIVER_ID:
            self.scrubbers = json.loads(a.get("data-scrubbers") or "[]")
            self.solutions = json.loads(a.get("data-solutions") or "null")
            self.layout = json.loads(a.get("data-layout") or "null")
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
    problems += [p for src in survey.images if (p := transparent(page, src))]
    return (
        problems
        + scrubber_problems(name, survey.scrubbers)
        + solution_problems(name, survey.solutions)
        + layout_problems(name, survey.layout)
    )


def transparent(page: Path, src: str) -> str | None:
    """A figure with see-through pixels takes the page's colour behind it: in dark mode its dark
    text and lines vanish into a dark page. Every figure of the book (the build's ``_images``) must
    be opaque."""
    from PIL import Image  # noqa: PLC0415 (matplotlib's dependency, in the book's environment)

    url = urlparse(src)
    path = page.parent / unquote(url.path)
    if url.scheme or "_images" not in path.parts or path.suffix.lower() not in (".png", ".gif", ".webp"):
        return None  # the book's figures live in _images; the theme's icons (_static) are drawn for any mode
    if not path.exists():
        return None
    try:
        with Image.open(path) as im:
            if "A" not in im.getbands() and "transparency" not in im.info:
                return None
            alpha = im.convert("RGBA").getchannel("A").getextrema()[0]
    except OSError as err:
        return f"image {src} cannot be read as an image ({err})"
    return f"image {src} has transparent pixels (alpha {alpha}): unreadable in dark mode" if alpha < 255 else None


def layout_problems(name: str, seen: dict | None) -> list[str]:
    """Tables wider than the page at 1400 pixels (on :data:`OVERFLOW_PAGES`), and table text that
    does not stand out from its background in dark mode."""
    if seen is None:
        return ["the layout check did not run (no report from the driver script)"]
    problems = []
    if name in OVERFLOW_PAGES and seen.get("overflow"):
        problems.append(f"tables {seen['overflow']} of {seen['tables']} are wider than the page at 1400 pixels")
    if name in CODE_PAGES and seen.get("code_overflow"):
        problems.append(
            f"code cells {seen['code_overflow']} of {seen['code_cells']} scroll sideways at 1400 pixels "
            f"(a cell holds {seen.get('code_columns')} characters; book/.ruff.toml sets the chapters' line length)"
        )
    contrast = seen.get("dark_contrast")
    if contrast is not None and contrast < MIN_CONTRAST:
        problems.append(
            f"in dark mode a table's text contrasts {contrast:.2f}:1 with its background (< {MIN_CONTRAST}:1)"
        )
    return problems


def solution_problems(name: str, seen: dict | None) -> list[str]:
    """The exercises' solution toggles: closed when the page opens, and open (their code showing)
    once clicked; a page of :data:`EXERCISE_PAGES` has at least one."""
    if seen is None:
        return ["the solution-toggle check did not run (no report from the driver script)"]
    problems = []
    if name in EXERCISE_PAGES and not seen.get("count"):
        problems.append("no exercise solution behind a 'Show solution' toggle")
    if seen.get("closed", 0) != seen.get("count", 0):
        problems.append(f"{seen['count'] - seen['closed']} of {seen['count']} solutions are open when the page opens")
    if seen.get("opened", 0) != seen.get("count", 0):
        problems.append(
            f"{seen['count'] - seen['opened']} of {seen['count']} solution toggles do not open to show their code"
        )
    return problems


def scrubber_problems(name: str, seen: list[dict] | None) -> list[str]:
    """What is wrong with the page's sliders, as the driver script saw them."""
    if seen is None:
        return ["the slider check did not run (no report from the driver script)"]
    problems = []
    if name in SCRUBBER_PAGES and not seen:
        problems.append("no scrubbable figure (an iclbook-scrubber slider) on a page that has one")
    for i, s in enumerate(seen):
        if s.get("broken"):
            problems.append(f"slider {i + 1}: its slider, image or label is missing")
        elif str(s.get("shown")) != str(s.get("target")) or not s.get("image_changed") or not s.get("label_changed"):
            problems.append(
                f"slider {i + 1}: moved to frame {s.get('target')} of {s.get('frames')}, it shows frame "
                f"{s.get('shown')} (image changed: {s.get('image_changed')}, label changed: {s.get('label_changed')})"
            )
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
            + (
                "rendered offline: math typeset, local images, claims table"
                + (", the slider drives its frames" if name in SCRUBBER_PAGES else "")
                + (", solutions closed and opening" if name in EXERCISE_PAGES else "")
                + (", tables within 1400 pixels" if name in OVERFLOW_PAGES else "")
                + (", code within its column at 1400 pixels" if name in CODE_PAGES else "")
                + ", readable in dark mode"
                if not problems
                else "; ".join(problems)
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
