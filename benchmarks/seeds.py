"""Run every chapter at one profile over several seeds and gather their verdicts: the seed table.

    python benchmarks/seeds.py                    # book profile, seeds 0-4 (make seeds)
    python benchmarks/seeds.py --seeds 3 --chapters 04

Each (chapter, seed) executes the paired notebook in a fresh kernel with an empty weight cache
(``benchmarks/chapter_times.run``), two at a time with one thread each (``--jobs``,
``--threads``: the build's way), writing its ledger record into a folder of its own; the records
are then gathered by ``iclbook.records.seed_table`` into ``book/records/seeds-<profile>.json``,
each chapter with its own seeds, date, machine, library version and commit. A run of some
chapters is merged into the existing table (``records.merge_seed_tables``): no chapter is lost.
The claims page of the book shows it: each claim's verdict per seed and the spread of our value.
A chapter that fails at one seed is reported and left out of that seed's column.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chapter_times import ROOT, run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".ci"))
from execute import TYPICAL_SECONDS  # noqa: E402

from iclbook import __version__, records  # noqa: E402


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # the seed table itself (book/records) is what this run writes: not a change of the code
            ["git", "-C", str(ROOT), "status", "--porcelain", "lib", "book", ":!book/records"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run_one(job: tuple[str, str, int, str, int]) -> tuple[str, int, float | None, str]:
    """One (chapter, seed) in this worker process: (notebook stem, seed, seconds or None, error)."""
    notebook, profile, seed, folder, threads = job
    env = {"ICLBOOK_RECORDS": folder, **{v: str(threads) for v in THREAD_VARS}}
    try:
        return Path(notebook).stem, seed, run(Path(notebook), profile, seed, extra_env=env), ""
    except Exception as err:  # noqa: BLE001  (a failed chapter is a finding, not a crash)
        return Path(notebook).stem, seed, None, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--profile", default="book")
    parser.add_argument("--chapters", nargs="+", default=None, help="chapter numbers, e.g. 04")
    parser.add_argument("--out", default=None, help="default book/records/seeds-<profile>.json")
    parser.add_argument("--jobs", type=int, default=2, help="chapters run at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per chapter (default 1)")
    parser.add_argument(
        "--keep-records",
        default=None,
        metavar="DIR",
        help="keep each seed's ledger records in DIR/seed<N> (e.g. to regenerate "
        "tests/verdicts-book.json from seed 0 with `make verdicts`)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    notebooks = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.chapters]
    if not notebooks:
        print("no chapter notebooks matched", file=sys.stderr)
        return 2
    import torch  # noqa: PLC0415

    start = time.perf_counter()
    per_seed, seconds, failures = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep_records or tmp)
        jobs = [
            (str(nb), args.profile, seed, str(base / f"seed{seed}"), args.threads)
            for seed in range(args.seeds)
            for nb in notebooks
        ]
        # JOBS chapters at a time, each in its own process and kernel with THREADS threads (the
        # build's way, .ci/execute.py); the slowest first, so the last to finish is a short one
        jobs.sort(key=lambda j: -TYPICAL_SECONDS.get(Path(j[0]).name[:2], 0))
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for stem, seed, t, err in pool.map(_run_one, jobs):
                if t is None:
                    failures.append(f"{stem[:2]} ({stem}) seed {seed}: {err}")
                    print("FAILED", failures[-1], flush=True)
                    continue
                seconds.setdefault(stem[:2], {})[str(seed)] = round(t, 1)
                print(f"{stem:32s} seed {seed}: {t:7.1f} s", flush=True)
        ran = {nb.name[:2] for nb in notebooks}
        for seed in range(args.seeds):  # only the chapters this run executed (a kept folder may hold others)
            per_seed[seed] = [
                r for r in records.load_records(base / f"seed{seed}", profile=args.profile) if r["chapter"] in ran
            ]
    about = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "library": __version__,
        "torch": torch.__version__,
        "commit": commit(),
        "seconds": seconds,
        "failures": failures,
        "jobs": f"{args.jobs} at a time, {args.threads} thread(s) each",
        "wall_s": round(time.perf_counter() - start),
    }
    table = records.seed_table(per_seed, profile=args.profile, about=about)
    out = Path(args.out) if args.out else ROOT / "book" / "records" / f"seeds-{args.profile}.json"
    if out.exists():  # the chapters not run keep their entries; a table of another profile is refused
        table = records.merge_seed_tables(json.loads(out.read_text()), table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    for ch, entry_ch in table["chapters"].items():
        for key, entry in entry_ch["rows"].items():
            verdicts = sorted(set(entry["verdicts"].values()))
            if len(verdicts) > 1:
                print(f"chapter {ch}: verdict depends on the seed: {key[:70]!r} {entry['verdicts']}")
            if "reproduced" in entry["null_verdicts"].values():
                print(
                    f"chapter {ch}: the NULL passes the criterion at some seed: {key[:70]!r} {entry['null_verdicts']}"
                )
    print(f"wrote {out}; {len(failures)} failed runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
