"""The repository URL and the release tag live in one place each: `repository.url` in _config.yml,
and `__version__` in lib/iclbook/__init__.py (the tag is `v<version>`). Every chapter's Colab link,
the book's launch buttons (`repository.branch` in _config.yml) and every install cell name that one
ref, the release tag: a reader in Colab runs the notebooks of the release with the library of the
same release, never main's notebooks on an older library.

    python .ci/links.py             rewrite the chapters (book/NN_*.md) and _config.yml's branch to
                                    follow the URL and the version; then `make sync`
    python .ci/links.py --check     exit 1 and list what disagrees (tests/test_notebooks.py runs this)
    python .ci/links.py --release   is the ref live? exit 1 if lib/ or book/ changed since the tag
                                    the links name; says plainly when that tag does not exist yet

A release: bump `__version__`, run `python .ci/links.py` and `make sync`, commit, then
`git tag v<version> && git push origin v<version>`. A fork sets `repository.url` to its own
GitHub repository, runs the same commands, and pushes the tag.
"""

from __future__ import annotations

import re
import subprocess
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
        "badge": f"[Open this chapter in Colab]({s['colab']}/github/{s['slug']}/blob/{s['tag']}/{notebook})",
        "target": f"git+{s['url']}@{s['tag']}#subdirectory=lib",
    }


BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)|\[Open this chapter in Colab\]\([^)]*\)")
TARGET = re.compile(r"git\+https://github\.com/[^\s\"#@]+@[^\s\"#]+#subdirectory=lib")


def problems(root: Path = ROOT) -> list[str]:
    s, out = settings(root), []
    if s["branch"] != s["tag"]:
        out.append(
            f"_config.yml: repository.branch is {s['branch']!r}, not the release tag {s['tag']!r} (the launch buttons)"
        )
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
    cfg = root / "_config.yml"
    cfg.write_text(re.sub(r"(?m)^(  branch: ).*$", lambda m: m.group(1) + s["tag"], cfg.read_text(), count=1))
    for md in sorted((root / "book").glob("[0-9][0-9]_*.md")):
        want = expected(md, s)
        text = BADGE.sub(lambda _, w=want: w["badge"], md.read_text())
        md.write_text(TARGET.sub(lambda _, w=want: w["target"], text))


def release(root: Path = ROOT) -> tuple[bool, str]:
    """Whether the ref the links name is live: ``(ok, what to say)``. Without the tag in this
    repository the links are not live yet (ok, said plainly); with it, lib/ and book/ must not have
    changed since (else the next release is due: bump the version)."""
    tag = settings(root)["tag"]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    if git("rev-parse", "-q", "--verify", f"refs/tags/{tag}").returncode != 0:
        return True, (
            f"no tag {tag} in this repository: the Colab links and install cells name a release that is not "
            f"tagged yet, so they are not live until `git tag {tag} && git push origin {tag}`"
        )
    changed = git("diff", "--name-only", tag, "--", "lib", "book", ":!book/records").stdout.split()
    if changed:
        return False, (
            f"{len(changed)} files of lib/ or book/ changed since {tag} (e.g. {changed[0]}): the Colab links run "
            f"{tag}'s notebooks on {tag}'s library, so these changes reach no Colab reader until the next "
            "release; bump __version__, run `python .ci/links.py` and `make sync`"
        )
    return True, f"{tag} is tagged and lib/ and book/ are as tagged: the Colab links are live"


if __name__ == "__main__":
    if "--release" in sys.argv[1:]:
        ok, text = release()
        print(text)
        sys.exit(0 if ok else 1)
    if "--check" in sys.argv[1:]:
        found = problems()
        print("\n".join(found) or "badges and install cells follow _config.yml")
        sys.exit(1 if found else 0)
    rewrite()
    print("rewrote the badges and install targets; now run `make sync`")
