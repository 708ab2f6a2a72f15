"""The repository URL and the release tag live in one place each: `repository.url` (and `branch`)
in _config.yml, and `__version__` in lib/iclbook/__init__.py (the tag is `v<version>`). Every
chapter's Colab badge and install cell, and chapter 2's pip line, are derived from them.

    python .ci/links.py           rewrite the chapters (book/NN_*.md) to follow _config.yml; then `make sync`
    python .ci/links.py --check   exit 1 and list what disagrees (tests/test_notebooks.py runs this check)

A fork sets `repository.url` in _config.yml to its own GitHub repository, runs both commands, and
pushes a tag `v<version>` so that the Colab install cell finds the library.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def settings(root: Path = ROOT) -> dict[str, str]:
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    url = cfg["repository"]["url"].rstrip("/")
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if not m:
        raise ValueError(f"repository.url must be https://github.com/<owner>/<name>, got {url!r}")
    version = re.search(r'__version__ = "([^"]+)"', (root / "lib/iclbook/__init__.py").read_text()).group(1)
    return {
        "url": url,
        "slug": f"{m.group(1)}/{m.group(2)}",
        "branch": cfg["repository"].get("branch", "main"),
        "colab": cfg["launch_buttons"]["colab_url"].rstrip("/"),
        "tag": f"v{version}",
    }


def expected(md: Path, s: dict[str, str]) -> dict[str, str]:
    """What the chapter's badge and install target must read."""
    notebook = f"book/{md.stem}.ipynb"
    return {
        # a text link, not Colab's badge image: the image is remote and breaks in a book read offline
        "badge": f"[Open this chapter in Colab]({s['colab']}/github/{s['slug']}/blob/{s['branch']}/{notebook})",
        "target": f"git+{s['url']}@{s['tag']}#subdirectory=lib",
    }


BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)|\[Open this chapter in Colab\]\([^)]*\)")
TARGET = re.compile(r"git\+https://github\.com/[^\s\"#@]+@[^\s\"#]+#subdirectory=lib")


def problems(root: Path = ROOT) -> list[str]:
    s, out = settings(root), []
    for md in sorted((root / "book").glob("[0-9][0-9]_*.md")):
        text, want = md.read_text(), expected(md, s)
        badges = BADGE.findall(text)
        if badges != [want["badge"]]:
            out.append(f"{md.name}: Colab badge {badges} != [{want['badge']}]")
        targets = TARGET.findall(text)
        if not targets or any(t != want["target"] for t in targets):
            out.append(f"{md.name}: install target(s) {targets} != {want['target']}")
    return out


def rewrite(root: Path = ROOT) -> None:
    s = settings(root)
    for md in sorted((root / "book").glob("[0-9][0-9]_*.md")):
        want = expected(md, s)
        text = BADGE.sub(lambda _, w=want: w["badge"], md.read_text())
        md.write_text(TARGET.sub(lambda _, w=want: w["target"], text))


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        found = problems()
        print("\n".join(found) or "badges and install cells follow _config.yml")
        sys.exit(1 if found else 0)
    rewrite()
    print("rewrote the badges and install targets; now run `make sync`")
