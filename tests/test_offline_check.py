"""The offline reading check (.ci/offline_check.py) on DOMs written out by hand: it must pass a
page whose formulas are typeset and whose images are local, and catch raw TeX, remote resources,
missing images and a page without a claims table. (`make test` runs it on the real build, in
headless Chromium.)"""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("offline_check", ROOT / ".ci" / "offline_check.py")
oc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oc)

GOOD = """<html><head><script src="_static/mathjax/tex-chtml.js"></script></head><body>
<p>Inline <span class="math notranslate nohighlight"><mjx-container jax="CHTML"><mjx-math></mjx-math></mjx-container></span></p>
<div class="math notranslate nohighlight"><mjx-container display="true"></mjx-container></div>
<img src="../_images/fig.png" alt="figure"><br>
<table><thead><tr><th>claim</th><th>verdict</th></tr></thead><tbody><tr><td>x</td><td>reproduced</td></tr></tbody></table>
<div id="iclbook-offline-check" data-scrubbers="[]" data-solutions="{&quot;count&quot;: 0, &quot;closed&quot;: 0, &quot;opened&quot;: 0}" data-layout="{&quot;tables&quot;: 1, &quot;overflow&quot;: [], &quot;dark_contrast&quot;: 12.0}"></div>
</body></html>"""


def check(tmp_path, dom, monkeypatch, name="book/page"):
    (tmp_path / "book").mkdir(exist_ok=True)
    (tmp_path / "_images").mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (2, 2), (255, 255, 255)).save(tmp_path / "_images" / "fig.png")
    (tmp_path / f"{name}.html").write_text("<html></html>")
    monkeypatch.setattr(oc, "rendered_dom", lambda page: dom)
    return oc.check_page(tmp_path, name)


def test_a_good_page_passes(tmp_path, monkeypatch):
    assert check(tmp_path, GOOD, monkeypatch) == []


def test_raw_tex_is_caught(tmp_path, monkeypatch):
    raw = GOOD.replace('<mjx-container display="true"></mjx-container>', r"\[F = a^\top x\]")
    assert check(tmp_path, raw, monkeypatch) == ["1 of 2 formulas not typeset (raw TeX on the page)"]


def test_remote_and_missing_images_and_no_table(tmp_path, monkeypatch):
    bad = (
        GOOD.replace("_static/mathjax/tex-chtml.js", "https://cdn.jsdelivr.net/npm/mathjax@3/tex-chtml.js")
        .replace("../_images/fig.png", "../_images/gone.png")
        .replace("<th>verdict</th>", "<th>result</th>")
        + '<img src="https://colab.research.google.com/assets/colab-badge.svg">'
    )
    problems = check(tmp_path, bad, monkeypatch)
    assert any("remote resource <script" in p for p in problems)
    assert any("remote resource <img" in p for p in problems)
    assert any("gone.png is not a file of the build" in p for p in problems)
    assert any("no claims table" in p for p in problems)


def test_a_missing_page_is_reported(tmp_path):
    assert oc.check_page(tmp_path, "book/nowhere")[0].endswith("is missing")


def driven(*seen: dict) -> str:
    report = json.dumps(list(seen)).replace('"', "&quot;")
    return GOOD.replace('data-scrubbers="[]"', f'data-scrubbers="{report}"')


def test_a_slider_that_moves_its_frame_passes_and_a_dead_one_is_caught(tmp_path, monkeypatch):
    moved = {"frames": 31, "target": 30, "shown": "30", "image_changed": True, "label_changed": True}
    assert check(tmp_path, driven(moved), monkeypatch, name="book/05_four_lenses") == [
        "no exercise solution behind a 'Show solution' toggle"
    ]
    dead = {"frames": 31, "target": 30, "shown": "12", "image_changed": False, "label_changed": False}
    problems = check(tmp_path, driven(moved, dead), monkeypatch)
    assert problems == [
        "slider 2: moved to frame 30 of 31, it shows frame 12 (image changed: False, label changed: False)"
    ]
    assert check(tmp_path, driven({"broken": True}), monkeypatch) == ["slider 1: its slider, image or label is missing"]


def test_the_explorer_page_needs_a_slider_and_every_page_needs_the_driver_report(tmp_path, monkeypatch):
    assert "book/05_four_lenses" in oc.SCRUBBER_PAGES
    assert any("no scrubbable figure" in p for p in check(tmp_path, GOOD, monkeypatch, name="book/05_four_lenses"))
    silent = GOOD.split('<div id="iclbook-offline-check"')[0] + "</body></html>"
    assert check(tmp_path, silent, monkeypatch) == [
        "the slider check did not run (no report from the driver script)",
        "the solution-toggle check did not run (no report from the driver script)",
        "the layout check did not run (no report from the driver script)",
    ]


def test_the_page_is_opened_through_a_driven_copy_that_is_removed(tmp_path, monkeypatch):
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>x</p></body></html>")
    seen = {}

    def fake_run(cmd, **kw):
        copy = Path(cmd[-1].removeprefix("file://"))
        seen["copy"], seen["text"] = copy, copy.read_text()

        class Out:
            stdout, stderr = "<html></html>", ""

        return Out()

    monkeypatch.setattr(oc, "browser", lambda: "chromium")
    monkeypatch.setattr(oc.subprocess, "run", fake_run)
    assert oc.rendered_dom(page) == "<html></html>"
    assert seen["copy"].parent == tmp_path and not seen["copy"].exists()
    assert seen["text"].index(oc.DRIVER_ID) < seen["text"].index("</body>")


def solutions(count: int, closed: int, opened: int) -> str:
    report = json.dumps({"count": count, "closed": closed, "opened": opened}).replace('"', "&quot;")
    return GOOD.replace(GOOD[GOOD.index('data-solutions="') : GOOD.index('" data-layout')], f'data-solutions="{report}')


def test_solution_toggles_must_start_closed_and_open(tmp_path, monkeypatch):
    assert check(tmp_path, solutions(3, 3, 3), monkeypatch, name="book/01_nonlinear_icl") == []
    assert check(tmp_path, solutions(0, 0, 0), monkeypatch, name="book/01_nonlinear_icl") == [
        "no exercise solution behind a 'Show solution' toggle"
    ]
    assert check(tmp_path, solutions(3, 2, 1), monkeypatch) == [
        "1 of 3 solutions are open when the page opens",
        "2 of 3 solution toggles do not open to show their code",
    ]


def layout(overflow: list[int], contrast: float, code: list[int] | None = None) -> str:
    report = {"tables": 3, "overflow": overflow, "dark_contrast": contrast}
    if code is not None:
        report.update(code_cells=4, code_overflow=code, code_columns=85)
    report = json.dumps(report).replace('"', "&quot;")
    return GOOD.replace(GOOD[GOOD.index('data-layout="') : GOOD.index('"></div>')], f'data-layout="{report}')


def test_wide_tables_on_the_claims_page_and_dark_mode_contrast_are_caught(tmp_path, monkeypatch):
    assert check(tmp_path, layout([], 9.0), monkeypatch, name="book/claims") == []
    assert check(tmp_path, layout([2], 9.0), monkeypatch, name="book/claims") == [
        "tables [2] of 3 are wider than the page at 1400 pixels"
    ]
    assert check(tmp_path, layout([2], 9.0), monkeypatch) == []  # a chapter's table may scroll
    assert check(tmp_path, layout([], 1.3), monkeypatch) == [
        "in dark mode a table's text contrasts 1.30:1 with its background (< 4.5:1)"
    ]


def test_a_chapter_code_cell_that_scrolls_sideways_is_caught(tmp_path, monkeypatch):
    chapter = sorted(oc.CODE_PAGES)[0]
    toggle = "no exercise solution behind a 'Show solution' toggle"  # this hand-written page has none
    assert check(tmp_path, layout([], 9.0, code=[]), monkeypatch, name=chapter) == [toggle]
    assert check(tmp_path, layout([], 9.0, code=[1, 3]), monkeypatch, name=chapter) == [
        toggle,
        "code cells [1, 3] of 4 scroll sideways at 1400 pixels (a cell holds 85 characters; "
        "book/.ruff.toml sets the chapters' line length)",
    ]
    assert check(tmp_path, layout([], 9.0, code=[1]), monkeypatch, name="book/claims") == []


def test_a_transparent_figure_is_caught(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "_images").mkdir()
    Image.new("RGBA", (4, 4), (255, 255, 255, 255)).save(tmp_path / "_images" / "opaque.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "_images" / "clear.png")
    Image.new("RGB", (4, 4), (255, 255, 255)).save(tmp_path / "_images" / "rgb.png")
    page = tmp_path / "book" / "page.html"
    page.parent.mkdir()
    assert oc.transparent(page, "../_images/opaque.png") is None
    assert oc.transparent(page, "../_images/rgb.png") is None
    assert "transparent pixels (alpha 0)" in oc.transparent(page, "../_images/clear.png")
    (tmp_path / "_static").mkdir()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "_static" / "icon.png")
    assert oc.transparent(page, "../_static/icon.png") is None  # the theme's icons are drawn for any mode
