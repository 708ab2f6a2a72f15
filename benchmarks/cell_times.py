"""Where a chapter's time goes: its most expensive cells, from an executed notebook's timings.

    python benchmarks/cell_times.py NOTEBOOK.ipynb [...] [--top 5] [--unit SECONDS]
    python benchmarks/cell_times.py _build/test/_build/executed/*.ipynb        # the build's own runs

Every executed notebook carries, per code cell, the kernel's timestamps (``execution`` metadata
that nbclient writes: ``iopub.execute_input`` to ``shell.execute_reply``). This prints each
notebook's ``--top`` most expensive cells: seconds, host units (``--unit``, the host unit of the
same run, ``benchmarks/host_unit.py``; measured here when not given), share of the notebook and
the cell's first code line. A book build keeps its executed notebooks, timings included, in
``<path-output>/_build/executed/`` (``.ci/execute.py`` writes them); ``chapter_times.py --keep
DIR`` keeps those of its runs.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--unit", type=float, default=None, help="the host unit in seconds (default: measure it)")
    args = parser.parse_args(argv)
    found = [(Path(p).name, nbformat.read(p, as_version=4)) for p in args.notebooks]
    if not found:
        parser.error("give executed notebooks")
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
