"""Where a chapter's time goes: its most expensive cells, from an executed notebook's timings.

    python benchmarks/cell_times.py NOTEBOOK.ipynb [...] [--top 5] [--unit SECONDS]
    python benchmarks/cell_times.py --cache _build/test/_build/.jupyter_cache   # the build's own runs

Every executed notebook carries, per code cell, the kernel's timestamps (``execution`` metadata
that nbclient writes: ``iopub.execute_input`` to ``shell.execute_reply``). This prints each
notebook's ``--top`` most expensive cells: seconds, host units (``--unit``, the host unit of the
same run, ``benchmarks/host_unit.py``; measured here when not given), share of the notebook and
the cell's first code line. ``--cache`` reads the executed notebooks of a book build's
jupyter-cache (``.ci/execute.py`` and ``jupyter-book build`` store them there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cell_seconds(cell) -> float | None:
    """Seconds between the kernel's receipt of a cell and its reply (None when not recorded)."""
    meta = cell.get("metadata", {}).get("execution", {})
    start, end = meta.get("iopub.execute_input"), meta.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def first_line(source: str) -> str:
    """The first line of a cell that is code, not a comment, a blank or cell metadata."""
    lines = [ln.strip() for ln in source.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith(("#", "---", "mystnb:", "figure:", "caption:", "name:"))]
    return (body[0] if body else "")[:90]


def top_cells(nb, n: int) -> tuple[float, list[tuple[int, float, str]]]:
    """``(total seconds, [(code cell index, seconds, first line), ...])``, the ``n`` slowest first."""
    timed = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        secs = cell_seconds(cell)
        if secs is not None:
            timed.append((i, secs, first_line(cell.source)))
    return sum(t for _, t, _ in timed), sorted(timed, key=lambda r: -r[1])[:n]


def cached_notebooks(cache: Path) -> list[tuple[str, nbformat.NotebookNode]]:
    """The executed notebooks stored in a jupyter-cache folder, with the page each came from."""
    from jupyter_cache import get_cache  # noqa: PLC0415

    jc = get_cache(str(cache))
    out = []
    for record in jc.list_cache_records():
        bundle = jc.get_cache_bundle(record.pk)
        out.append((Path(record.uri).name if record.uri else f"record {record.pk}", bundle.nb))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--cache", default=None, help="a jupyter-cache folder to read executed notebooks from")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--unit", type=float, default=None, help="the host unit in seconds (default: measure it)")
    args = parser.parse_args(argv)
    found = [(Path(p).name, nbformat.read(p, as_version=4)) for p in args.notebooks]
    if args.cache:
        found += cached_notebooks(Path(args.cache))
    if not found:
        parser.error("give executed notebooks or --cache")
    if args.unit is None:
        import host_unit  # noqa: PLC0415

        args.unit = host_unit.unit()
    print(f"host unit {args.unit:.2f} s\n")
    for name, nb in sorted(found):
        total, cells = top_cells(nb, args.top)
        print(f"{name}: {total:.0f} s in code cells ({total / args.unit:.0f} units)")
        print("| cell | seconds | units | share | first line |\n|--:|--:|--:|--:|---|")
        for i, secs, line in cells:
            print(f"| {i} | {secs:.1f} | {secs / args.unit:.1f} | {secs / total:.0%} | `{line}` |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
