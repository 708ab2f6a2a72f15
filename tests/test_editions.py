"""Editions a reader can cite: CITATION.cff agrees with the book and the library, and the
changelog (.ci/changelog.py) is what the repository's history gives."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """A script of .ci/ (not a module of the library), loaded by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _changelog():
    return _script("changelog")


def test_the_citation_names_the_book_and_its_edition():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "lib/iclbook/__init__.py").read_text()).group(1)
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == cff["preferred-citation"]["title"] == cfg["title"]
    assert cff["version"] == cff["preferred-citation"]["edition"] == version
    assert [a["name"] for a in cff["authors"]] == [cfg["author"]]
    assert cff["repository-code"] == cfg["repository"]["url"]
    assert cff["preferred-citation"]["type"] == "book"


def test_the_changelog_is_current():
    changelog = _changelog()
    if changelog.shallow():
        warnings.warn("a shallow clone holds no history: the changelog cannot be checked here", stacklevel=1)
        return
    assert (ROOT / "CHANGELOG.md").read_text() == changelog.render(), (
        "CHANGELOG.md is stale: run `python .ci/changelog.py` and commit it"
    )


def test_the_changelog_lists_moved_verdicts_rows_and_criteria():
    changelog = _changelog()
    old = {
        "chapters": {"01": {"a": "reproduced", "b": "partly", "gone": "holds"}},
        "criteria": {"01": {"a": "x ≥ 0.5"}},
    }
    new = {
        "chapters": {"01": {"a": "reproduced", "b": "not reproduced", "c": "inconclusive"}},
        "criteria": {"01": {"a": "x ≥ 0.8"}},
    }
    assert changelog.changes(old, new) == [
        "- chapter 1: *b*: partly → **not reproduced**",
        "- chapter 1, removed: *gone* (was holds)",
        "- chapter 1, new: *c* (inconclusive)",
        "- chapter 1, criterion of *a*: `x ≥ 0.5` → `x ≥ 0.8`",
    ]


def test_the_changelog_groups_commits_by_version_in_a_throwaway_repository(tmp_path):
    changelog = _changelog()

    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    (tmp_path / "tests").mkdir()
    (tmp_path / "lib/iclbook").mkdir(parents=True)
    git("init", "-q")
    for version, verdict, message in (
        ("0.1.0", "partly", "first record"),
        ("0.2.0", "reproduced", "a fix\n\nbecause of x"),
    ):
        (tmp_path / "lib/iclbook/__init__.py").write_text(f'__version__ = "{version}"\n')
        (tmp_path / "tests/verdicts-book.json").write_text(json.dumps({"chapters": {"02": {"row": verdict}}}))
        git("add", ".")
        git("commit", "-q", "-m", message)
        if version == "0.1.0":
            git("tag", "v0.1.0")
    text = changelog.render(tmp_path)
    assert text.index("## 0.2.0 (unreleased)") < text.index("## 0.1.0 (released")
    assert "- chapter 2: *row*: partly → **reproduced**" in text
    assert "because of x" in text and "The first record of expected verdicts (1 rows)." in text


def _pdf():
    return _script("pdf")  # it finds offline_check beside it through its own sys.path entry


def test_the_pdf_printer_finds_the_single_page_and_its_figures_and_titles(tmp_path):
    pdf = _pdf()
    (tmp_path / "book").mkdir()
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    (tmp_path / "book" / "intro.html").write_text(
        "<h1>Intro<a class='headerlink'>#</a></h1><img src='a.png'><img src='a.png'>"
    )
    assert pdf.root_page(tmp_path) == tmp_path / "book" / "intro.html"
    page = pdf.Figures()
    page.feed((tmp_path / "book" / "intro.html").read_text())
    assert page.titles == ["Intro"] and page.images == {"a.png"}
    assert "Show solution" in pdf.PRINT_SCRIPT and "d.open = true" in pdf.PRINT_SCRIPT


def test_the_build_orders_chapters_by_their_seed_run_times():
    """.ci/execute.py starts the longest chapters first, reading each one's median time from the
    committed seed table (the typical times only for a chapter the table lacks)."""
    execute = _script("execute")
    table = json.loads((ROOT / "book" / "records" / "seeds-book.json").read_text())
    for md in sorted((ROOT / "book").glob("[0-9][0-9]_*.md")):
        secs = sorted(table["chapters"][md.name[:2]]["seconds"].values())
        assert execute.expected_seconds(md) == secs[len(secs) // 2]
