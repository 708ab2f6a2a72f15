"""The book as one PDF, printed offline by headless Chromium from the single-page HTML build.

    python .ci/pdf.py _build/_build/singlehtml _build/book.pdf     (what `make pdf` runs)

Jupyter Book's own PDF builders either download a browser at first use (pdfhtml) or print hidden
cells (pdflatex). This prints the `singlehtml` build with the Chromium that `make test` already
installs, through a copy of the page that carries a short script: it opens every fold a reader
would open (hints, "Predict, then see", the commits' reasons), removes the exercises' solutions
and the code behind "Show code" toggles, and leaves the cliff explorer on its first frame. Then it
checks the PDF with pypdf: every chapter's title is in its text, it has at least as many images
as the page shows distinct figures, and it has a plausible number of pages. A failed check exits 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))

from offline_check import browser  # noqa: E402  (the same Chromium as the offline check)

PRINT_SCRIPT = """<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) {
    var summary = d.querySelector("summary");
    var text = summary ? summary.textContent : "";
    if (text.indexOf("Show solution") >= 0) {
      var cell = d.closest(".cell") || d;
      cell.remove();  // a printed book does not give the solutions away
    } else if (d.classList.contains("hide")) {
      d.remove();  // the code behind a "Show code" toggle: not part of the printed page
    } else {
      d.open = true;  // hints, predictions, reasons: open, as a reader would
    }
  });
});
</script>
<style>@media print { .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header, .header-article, footer { display: none !important; } }</style>
"""
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=60000",
    "--no-pdf-header-footer",
]


class Figures(HTMLParser):
    """The distinct figures a page shows (``<img>`` sources) and its chapter titles (``<h1>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: set[str] = set()
        self.titles: list[str] = []
        self._h1 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.images.add(a["src"])
        if tag == "h1":
            self._h1, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "h1" and self._h1:
            self._h1 = False
            title = re.sub(r"\s+", " ", self._text).replace("#", "").strip()
            if title:
                self.titles.append(title)

    def handle_data(self, data):
        if self._h1:
            self._text += data


def chapter_titles(root: Path = ROOT) -> list[str]:
    """Each chapter's title, the first ``# `` line of ``book/NN_*.md``."""
    out = []
    for md in sorted((root / "book").glob("[0-9][0-9]_*.md")):
        m = re.search(r"^# (.+)$", md.read_text(encoding="utf-8"), re.M)
        if m:
            out.append(m.group(1).strip())
    return out


def print_pdf(html: Path, out: Path) -> None:
    """Print ``html`` (a page of the singlehtml build) to ``out`` through a copy with the print script."""
    text = html.read_text(encoding="utf-8")
    at = text.rfind("</body>")
    copy = html.with_name(f".{html.stem}.print.html")
    copy.write_text(text[:at] + PRINT_SCRIPT + text[at:], encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [browser(), *FLAGS, f"--print-to-pdf={out.resolve()}", copy.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        copy.unlink(missing_ok=True)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"{browser()} wrote no PDF to {out}")


def check(pdf: Path, html: Path, min_pages: int = 30) -> list[str]:
    """What is missing from the PDF: a chapter title, figures, pages."""
    from pypdf import PdfReader  # noqa: PLC0415

    page = Figures()
    page.feed(html.read_text(encoding="utf-8"))
    reader = PdfReader(str(pdf))
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() or "" for p in reader.pages))
    images = sum(len(p.images) for p in reader.pages)
    # the chapters' titles, from their sources (the single page makes them second-level headings)
    titles = list(dict.fromkeys(page.titles + chapter_titles()))
    problems = [f"the chapter title {t!r} is not in the PDF's text" for t in titles if t not in text]
    figures = len([s for s in page.images if not s.startswith("data:")])
    if images < figures:
        problems.append(f"the PDF holds {images} images, fewer than the page's {figures} figures")
    if len(reader.pages) < min_pages:
        problems.append(f"the PDF has {len(reader.pages)} pages, fewer than {min_pages}")
    print(
        f"{pdf}: {len(reader.pages)} pages, {images} images ({figures} figures on the page), "
        f"{len(titles)} titles checked"
    )
    return problems


def root_page(folder: Path) -> Path:
    """The single page of a singlehtml build: ``index.html``, or the page it redirects to (Jupyter
    Book writes ``index.html`` as a redirect to the root document, ``book/intro.html`` here)."""
    index = folder / "index.html"
    m = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index.read_text(encoding="utf-8"))
    return folder / m.group(1) if m else index


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    folder, out = Path(argv[0]), Path(argv[1])
    if not (folder / "index.html").exists():
        print(f"{folder / 'index.html'} is missing: build the single-page HTML first (make pdf does)")
        return 2
    html = root_page(folder)
    print_pdf(html, out)
    problems = check(out, html)
    print("\n".join(problems) or f"{out}: every chapter and its figures are in the PDF")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
