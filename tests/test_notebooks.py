"""The text chapters (book/NN_*.md, the source) and their paired notebooks (book/NN_*.ipynb, for
Colab and nbval) must hold the same cells, and the notebooks must carry no outputs.

Fix a failure with:  make sync   (jupytext --to ipynb book/NN_slug.md; the .md is the source)
"""

import re
from pathlib import Path

import jupytext
import pytest
import yaml
from jupytext.compare import compare_notebooks

import iclbook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))


def test_there_are_chapters():
    from iclbook import chapter

    assert [p.stem[:2] for p in CHAPTERS] == sorted(chapter.CHAPTERS), "the pages under book/ are not the chapters"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_pair_in_sync_and_output_free(md):
    nb_path = md.with_suffix(".ipynb")
    assert nb_path.exists(), f"{nb_path.name} is missing: run make sync"
    text, paired = jupytext.read(md), jupytext.read(nb_path)
    stored = [i for i, c in enumerate(paired.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not stored, f"{nb_path.name} has stored outputs in cells {stored}: commit it output-free"
    assert not [c for c in paired.cells if c.cell_type == "code" and c.get("execution_count")]
    compare_notebooks(paired, text, fmt="md:myst")  # raises with a readable diff when they drift


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_colab_cell(md):
    """The first code cell installs the library only in Colab (or where ICLBOOK_INSTALL names a
    target, as `make colab` does), pinned to this version's tag."""
    nb = jupytext.read(md)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "remove-cell" in first.metadata.get("tags", [])
    flat = " ".join(first.source.split())  # the formatter may break a line: compare the words
    assert 'if "google.colab" in sys.modules or os.environ.get("ICLBOOK_INSTALL"):' in flat
    assert 'os.environ.get("ICLBOOK_INSTALL") or "iclbook @ ' in flat
    assert '%pip install -q "$ICLBOOK_TARGET"' in first.source
    tags = re.findall(r"@v([0-9][^#\s\"]*)#subdirectory=lib", first.source)
    assert tags == [iclbook.__version__], f"the Colab cell pins {tags}, the library is {iclbook.__version__}"


def _links():
    """.ci/links.py, which is a script, not a module of the library."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("links", ROOT / ".ci" / "links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_badges_and_install_targets_follow_the_config():
    """One place for the repository URL (_config.yml) and the tag (the library's version): every
    badge and install target agrees with them. Fix with `python .ci/links.py` and `make sync`."""
    assert _links().problems() == []


def test_the_ref_the_links_name_is_live_or_said_not_to_be():
    """Every Colab link and install cell names the release tag. With the tag present, lib/ and
    book/ must be as tagged (else main's changes reach no Colab reader: release again); without
    it, the links are not live yet, and the test says so in the warnings summary."""
    import subprocess
    import warnings

    links = _links()
    ok, text = links.release()
    assert ok, text
    tag = links.settings()["tag"]
    present = (
        subprocess.run(["git", "-C", str(ROOT), "rev-parse", "-q", "--verify", f"refs/tags/{tag}"]).returncode == 0
    )
    if not present:
        assert "not live" in text
        warnings.warn(text, stacklevel=1)


def test_the_release_check_fails_when_the_library_moved_past_its_tag(tmp_path):
    import shutil
    import subprocess

    links = _links()
    for folder in ("book", "lib/iclbook"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copy(ROOT / "lib/iclbook/__init__.py", tmp_path / "lib/iclbook")
    tag = links.settings(tmp_path)["tag"]

    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "release")
    ok, text = links.release(tmp_path)
    assert ok and "not live" in text
    git("tag", tag)
    assert links.release(tmp_path) == (
        True,
        f"{tag} is tagged and lib/ and book/ are as tagged: the Colab links are live",
    )
    (tmp_path / "lib/iclbook/new.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "after the release")
    ok, text = links.release(tmp_path)
    assert not ok and "changed since" in text and "bump __version__" in text


def test_links_check_catches_a_stale_badge(tmp_path):
    import shutil

    links = _links()
    (tmp_path / "book").mkdir()
    (tmp_path / "lib/iclbook").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copy(ROOT / "lib/iclbook/__init__.py", tmp_path / "lib/iclbook")
    shutil.copy(CHAPTERS[0], tmp_path / "book")
    assert links.problems(tmp_path) == []
    cfg = (tmp_path / "_config.yml").read_text().replace("icl-mechanistically/icl-book", "someone/fork")
    (tmp_path / "_config.yml").write_text(cfg)
    assert len(links.problems(tmp_path)) == 2  # the badge and the install target
    links.rewrite(tmp_path)
    assert links.problems(tmp_path) == []
    assert "someone/fork@v" in (tmp_path / "book" / CHAPTERS[0].name).read_text()


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_in_the_toc_starts_and_ends_through_the_library(md):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    assert f"book/{md.stem}" in files
    text = md.read_text()
    assert "## Claims ledger" in text and text.rstrip().endswith("ch.finish()\n```")
    cells = text.split("```{code-cell} ipython3")
    first = "".join(cells[2].split())  # the first cell after the Colab install, layout aside
    assert f'ch=chapter.start("{md.stem[:2]}",' in first
    for stale in ("runtime.seed_everything", "runtime.generator(SEED", "Ledger(", "CHAPTER_START"):
        assert stale not in text, f"{md.name} does by hand what chapter.start does: {stale}"
    # the one smoke convention (ch.unjudged): no branch on the profile's name, no block of
    # checks skipped at smoke (its rows are recorded inconclusive, with the reason)
    for branch in (
        'PROFILE == "smoke"',
        'PROFILE != "smoke"',
        "if cfg.checks",
        "if cfg.gpt_trend_checks",
        "display(Markdown(ledger.table",
    ):
        assert branch not in text, f"{md.name}: {branch!r} (use ch.unjudged / a config field / ch.table)"


def test_every_chapter_follows_the_layout_rule():
    """book/NN_slug.md <-> iclbook.<module> <-> tests/test_<tests>.py, the module imported under
    its alias: the table in iclbook.chapter.CHAPTERS is the whole rule."""
    import importlib
    import re

    from iclbook import chapter

    pages = {p.stem[:2]: p for p in CHAPTERS}
    assert set(pages) == set(chapter.CHAPTERS), "a chapter without a row in chapter.CHAPTERS, or a row without a page"
    for number, row in chapter.CHAPTERS.items():
        assert pages[number].stem == f"{number}_{row['slug']}"
        importlib.import_module(f"iclbook.{row['module']}")
        assert (ROOT / "tests" / f"test_{row['tests']}.py").exists()
        parent, _, last = f"iclbook.{row['module']}".rpartition(".")
        imported = rf"from {re.escape(parent)} import [^\n]*\b{last}\b" + (
            rf" as {row['alias']}\b" if row["alias"] != last else ""
        )
        assert re.search(imported, pages[number].read_text()), (
            f"{pages[number].name} does not import {row['module']} as {row['alias']}"
        )
        package = row["package"]
        if package is None:
            continue
        folder = Path(iclbook.__file__).parent / package
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        listed = {name.rpartition(".")[2] for name in chapter.rooms(number).values()}
        assert modules == listed, (
            f"iclbook.{package}'s modules {sorted(modules)} are not the rooms chapter.CHAPTERS lists {sorted(listed)}"
        )
        for room in chapter.ROOMS:
            importlib.import_module(chapter.rooms(number)[room])


def test_the_wheel_ships_every_package_of_the_library():
    """lib/pyproject.toml lists the packages explicitly (the weights folders are data): a new
    chapter package missing from the list would import here and fail in Colab's wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    lib = ROOT / "lib"
    found = {".".join(p.parent.relative_to(lib).parts) for p in (lib / "iclbook").rglob("__init__.py")}
    assert found <= listed, f"packages missing from lib/pyproject.toml: {sorted(found - listed)}"


def test_the_claims_page_has_no_colab_button_and_chapters_keep_theirs():
    """book/claims.md is executed by the build only (it reads the chapters' records) and has no
    paired notebook: its launch button would open nothing, so the book's extension removes it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ext", ROOT / "book" / "_ext" / "claims_always_fresh.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    buttons = [{"label": "launch-buttons"}, {"label": "download-buttons"}]
    claims, chapter_page = {"header_buttons": list(buttons)}, {"header_buttons": list(buttons)}
    ext._no_launch_button(None, ext.PAGE, "page.html", claims, None)
    ext._no_launch_button(None, "book/01_nonlinear_icl", "page.html", chapter_page, None)
    assert claims["header_buttons"] == [{"label": "download-buttons"}]
    assert chapter_page["header_buttons"] == buttons
    assert not (ROOT / "book" / "claims.ipynb").exists()


def test_every_included_library_object_exists():
    """A chapter shows library code with ``{literalinclude}`` and ``:pyobject:``; a renamed function
    would only warn in the strict build, minutes later: each named object must be in its file."""
    import ast

    for md in sorted((ROOT / "book").glob("*.md")):
        for m in re.finditer(r"```\{literalinclude\} (\S+)\n:pyobject: (\S+)", md.read_text()):
            path, name = (md.parent / m.group(1)).resolve(), m.group(2)
            body = ast.parse(path.read_text()).body
            for part in name.split("."):
                found = [n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
                assert found, f"{md.name} includes {name}, which {path.name} does not define"
                body = found[0].body
