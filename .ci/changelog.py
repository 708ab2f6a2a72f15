"""The book's changelog, generated from the repository: every verdict and criterion that changed.

    python .ci/changelog.py            rewrite CHANGELOG.md from the history of tests/verdicts-book.json
    python .ci/changelog.py --check    exit 1 when CHANGELOG.md is not what the history gives

`tests/verdicts-book.json` holds the expected verdict of every ledger row at the book profile,
seed 0, and (from its schema with criteria on) each row's criterion; every commit that changes it
says why in its message. This script walks those commits, oldest first, and lists for each what
changed against the version before it: verdicts that moved, rows added or removed, criteria whose
text changed, with the commit's reasons. Commits fall under the library version they carry
(`__version__`); a version whose tag `v<version>` exists is dated by it, one without a tag is
"unreleased". The book shows the file as its last page. A shallow clone has no history to read:
the check then says so and passes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "tests/verdicts-book.json"
OUT = "CHANGELOG.md"
HEAD = """# Changelog

What changed between editions of this book: every verdict of the book profile (seed 0) that moved,
every row added or removed, and every criterion whose wording or threshold changed, each with the
reason its commit gives. It is generated from the history of `tests/verdicts-book.json` by
`python .ci/changelog.py` (do not edit it by hand); a test checks that it is current. Criteria are
recorded from the commit that first stored them. A reproduction book whose thresholds can move
should say when and why they moved.
"""


def git(*args: str, root: Path = ROOT) -> str:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def shallow(root: Path = ROOT) -> bool:
    return git("rev-parse", "--is-shallow-repository", root=root).strip() == "true"


def _load(commit: str, root: Path) -> dict:
    try:
        return json.loads(git("show", f"{commit}:{SOURCE}", root=root))
    except (RuntimeError, json.JSONDecodeError):
        return {}


def _version(commit: str, root: Path) -> str:
    text = git("show", f"{commit}:lib/iclbook/__init__.py", root=root)
    m = re.search(r'__version__ = "([^"]+)"', text)
    return m.group(1) if m else "?"


def _short(key: str, width: int = 110) -> str:
    return key if len(key) <= width else key[: width - 1] + "…"


def changes(old: dict, new: dict) -> list[str]:
    """One Markdown bullet per change between two versions of the expected-verdicts file."""
    out = []
    old_v, new_v = old.get("chapters", {}), new.get("chapters", {})
    old_c, new_c = old.get("criteria", {}), new.get("criteria", {})
    for ch in sorted(set(old_v) | set(new_v)):
        a, b = old_v.get(ch, {}), new_v.get(ch, {})
        name = f"chapter {int(ch)}"
        for key in a:
            if key not in b:
                out.append(f"- {name}, removed: *{_short(key)}* (was {a[key]})")
            elif a[key] != b[key]:
                out.append(f"- {name}: *{_short(key)}*: {a[key]} → **{b[key]}**")
        for key in b:
            if key not in a:
                out.append(f"- {name}, new: *{_short(key)}* ({b[key]})")
        ca, cb = old_c.get(ch, {}), new_c.get(ch, {})
        for key in cb:
            if key in ca and ca[key] != cb[key]:
                out.append(f"- {name}, criterion of *{_short(key)}*: `{ca[key]}` → `{cb[key]}`")
    return out


def history(root: Path = ROOT) -> list[dict]:
    """The commits that changed the expected verdicts, oldest first, with what changed."""
    log = git("log", "--reverse", "--format=%H%x1f%ad%x1f%B%x1e", "--date=short", "--", SOURCE, root=root)
    entries, previous = [], {}
    for raw in log.split("\x1e"):
        if not raw.strip():
            continue
        commit, date, message = raw.strip("\n").split("\x1f", 2)
        current = _load(commit, root)
        subject, _, body = message.strip().partition("\n")
        entries.append(
            {
                "commit": commit[:7],
                "date": date,
                "subject": subject.strip(),
                "body": body.strip(),
                "version": _version(commit, root),
                "changes": changes(previous, current),
                "first": not previous,
            }
        )
        previous = current
    return entries


def render(root: Path = ROOT) -> str:
    entries = history(root)
    tags = set(git("tag", "--list", "v*", root=root).split())
    out = [HEAD]
    for version in reversed(list(dict.fromkeys(e["version"] for e in entries))):
        tag = f"v{version}"
        dated = git("log", "-1", "--format=%ad", "--date=short", tag, root=root).strip() if tag in tags else ""
        out.append(f"\n## {version} ({'released ' + dated if dated else 'unreleased'})\n")
        for e in reversed([e for e in entries if e["version"] == version]):
            out.append(f"\n### {e['date']} · `{e['commit']}`\n\n{e['subject']}\n")
            if e["first"]:
                rows = sum(1 for line in e["changes"] if ", new:" in line)
                out.append(f"\nThe first record of expected verdicts ({rows} rows).\n")
            elif e["changes"]:
                out.append("\n" + "\n".join(e["changes"]) + "\n")
            else:
                out.append("\nNo verdict or criterion changed.\n")
            if e["body"]:  # plain text, shown as it was written: no Markdown is read into it
                body = e["body"].replace("`" * 3, "'" * 3)
                out.append(
                    f"\n<details><summary>The commit's reasons</summary>\n\n```text\n{body}\n```\n\n</details>\n"
                )
    return "".join(out)


def main(argv: list[str]) -> int:
    path = ROOT / OUT
    if "--check" in argv:
        if shallow():
            print("a shallow clone holds no history: the changelog cannot be checked here")
            return 0
        if not path.exists() or path.read_text() != render():
            print(f"{OUT} is not what the history gives: run `python .ci/changelog.py` and commit it")
            return 1
        print(f"{OUT} is current")
        return 0
    path.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
