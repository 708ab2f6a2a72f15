"""Execute each chapter at each profile and print its wall time against the profile's budget.

    python benchmarks/chapter_times.py                      # every chapter, smoke and book
    python benchmarks/chapter_times.py --profiles paper     # the paper profile (on a GPU)
    python benchmarks/chapter_times.py --chapters 04 --seed 3
    ICLBOOK_SEED=3 python benchmarks/chapter_times.py --chapters 04    # the same: flags default to the environment

Each run executes the paired notebook ``book/NN_*.ipynb`` in a fresh kernel (nbclient, the engine
Jupyter Book uses), with ``ICLBOOK_PROFILE``/``ICLBOOK_SEED`` set and an empty weight cache, so the
time includes training, exactly as CI and a first-time reader pay it. Runs are sequential: this is
a 2-core machine, and a parallel run would time the contention. The time is that of the whole
notebook, kernel start and imports included.

Every time is also printed in *host units* (``benchmarks/host_unit.py``: a fixed small workload
like the chapters', measured in the same run, before the first chapter and after the last), and
the budgets are in host units: hosts of one kind differ by 2-3x in speed, and a chapter's time as
a multiple of the unit is what stays put from one host to the next.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import host_unit  # noqa: E402

#: The host unit, in seconds, of the host on which the seconds budgets below were turned into
#: units (a 2-core CPU box of the project's kind, idle, 2026-12-06; benchmarks/README.md): budgets
#: in host units are the seconds budgets divided by it.
CALIBRATION_UNIT_S = 2.05
#: Budgets per chapter in seconds on that machine (smoke, book) and on one H100 (paper); GUIDE
#: section 5.
BUDGET_S = {"smoke": 45, "book": 180, "paper": 1200}
#: Tighter targets some chapters' issues set.
# the budgets each chapter's issue states (issues 31, 33, 34, 35; the others take BUDGET_S)
CHAPTER_BUDGET_S = {
    ("02", "book"): 210,
    ("04", "smoke"): 30,
    ("04", "book"): 120,
    ("03", "book"): 240,
    ("05", "book"): 150,
}


def budget_units(chapter: str, profile: str) -> float:
    """A chapter's budget in host units (its seconds budget on the calibration host / that host's unit)."""
    return CHAPTER_BUDGET_S.get((chapter, profile), BUDGET_S[profile]) / CALIBRATION_UNIT_S


def run(
    notebook: Path,
    profile: str,
    seed: int,
    cache_dir: str | None = None,
    keep: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> float:
    """Execute ``notebook`` at ``profile`` and return its wall time in seconds. The weight cache
    is a fresh temporary folder unless ``cache_dir`` is given (to iterate on a chapter);
    ``extra_env`` sets more variables for the kernel (e.g. ``ICLBOOK_RECORDS``)."""
    nb = nbformat.read(notebook, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_dir or tmp
        env = {
            "ICLBOOK_PROFILE": profile,
            "ICLBOOK_SEED": str(seed),
            "ICLBOOK_CACHE": cache,
            "ICLBOOK_PROGRESS": "0",
            **(extra_env or {}),
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            start = time.perf_counter()
            client = NotebookClient(
                nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
            )
            try:
                client.execute()
            finally:
                if keep:  # the executed notebook, outputs and all, even when a cell failed
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    nbformat.write(nb, Path(keep) / f"{notebook.stem}-{profile}-seed{seed}.ipynb")
            return time.perf_counter() - start
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--seed`` and ``--cache`` default to ``ICLBOOK_SEED`` and ``ICLBOOK_CACHE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "book"], choices=list(BUDGET_S))
    parser.add_argument("--chapters", nargs="+", default=None, help="chapter numbers, e.g. 04")
    # the flags default to the environment, so that ICLBOOK_SEED=3 python benchmarks/chapter_times.py
    # runs seed 3 (it used to run seed 0 whatever the environment said)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("ICLBOOK_SEED", "0") or 0))
    parser.add_argument(
        "--cache",
        default=os.environ.get("ICLBOOK_CACHE") or None,
        help="reuse this weight cache (times then exclude training); default ICLBOOK_CACHE, else a fresh one",
    )
    parser.add_argument("--keep", default=None, help="write the executed notebooks into this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    notebooks = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.chapters]
    if not notebooks:
        print("no chapter notebooks matched", file=sys.stderr)
        return 2
    unit = host_unit.unit()
    print(f"host unit before: {unit:.2f} s ({host_unit.__doc__.splitlines()[0]})", flush=True)
    results = []
    for nb in notebooks:
        for profile in args.profiles:
            results.append((nb, profile, run(nb, profile, args.seed, args.cache, args.keep)))
            print(f"  {nb.stem} {profile}: {results[-1][2]:.1f} s", flush=True)
    after = host_unit.unit()
    unit = (unit + after) / 2  # the host's speed may drift during a long run: use the mean
    print(f"host unit after: {after:.2f} s; the unit of this run: {unit:.2f} s\n")
    print(f"{'chapter':32s} {'profile':8s} {'seconds':>8s} {'units':>7s} {'budget':>7s} {'ratio':>6s}")
    over = 0
    for nb, profile, seconds in results:
        budget = budget_units(nb.name[:2], profile)
        units = seconds / unit
        over += units > budget
        print(f"{nb.stem:32s} {profile:8s} {seconds:8.1f} {units:7.1f} {budget:7.1f} {units / budget:6.2f}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
