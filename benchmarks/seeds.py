"""Run every chapter at one profile over several seeds and gather their verdicts: the seed table.

    python benchmarks/seeds.py                    # book profile, seeds 0-4 (make seeds)
    python benchmarks/seeds.py --seeds 3 --chapters 04

Each (chapter, seed) executes the paired notebook in a fresh kernel with an empty weight cache
(``benchmarks/chapter_times.run``), writing its ledger record into a folder of its own; the
records are then gathered by ``iclbook.records.seed_table`` into
``book/records/seeds-<profile>.json`` with the seeds, date, machine, library version and commit.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chapter_times import ROOT, run  # noqa: E402

from iclbook import __version__, records  # noqa: E402


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "lib", "book"], capture_output=True, text=True
        ).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def keep_other_chapters(table: dict, old: dict) -> dict:
    """A run of some chapters merged into an existing table of the same profile and seeds: the
    chapters not rerun keep their columns, and ``kept`` says from which run they come."""
    if old.get("profile") != table["profile"] or old.get("seeds") != table["seeds"]:
        print(
            f"the existing table has other seeds or profile ({old.get('seeds')}, {old.get('profile')}): "
            "writing only the chapters just run",
            file=sys.stderr,
        )
        return table
    table = {**table, "chapters": dict(table["chapters"])}  # the caller's table stays as it was
    kept = sorted(set(old.get("chapters", {})) - set(table["chapters"]))
    for ch in kept:
        table["chapters"][ch] = old["chapters"][ch]
    table["seconds"] = {**{ch: old.get("seconds", {}).get(ch) for ch in kept}, **table.get("seconds", {})}
    if kept:
        earlier = old.get("kept", {})
        table["kept"] = {
            ch: earlier.get(ch, {"created": old.get("created"), "commit": old.get("commit")}) for ch in kept
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--profile", default="book")
    parser.add_argument("--chapters", nargs="+", default=None, help="chapter numbers, e.g. 04")
    parser.add_argument("--out", default=None, help="default book/records/seeds-<profile>.json")
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
        for seed in range(args.seeds):
            folder = Path(args.keep_records or tmp) / f"seed{seed}"
            for nb in notebooks:
                try:
                    t = run(nb, args.profile, seed, extra_env={"ICLBOOK_RECORDS": str(folder)})
                except Exception as err:  # noqa: BLE001  (a failed chapter is a finding, not a crash)
                    failures.append(f"{nb.stem} seed {seed}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    print("FAILED", failures[-1], flush=True)
                    continue
                seconds.setdefault(nb.name[:2], {})[str(seed)] = round(t, 1)
                print(f"{nb.stem:32s} seed {seed}: {t:7.1f} s", flush=True)
            per_seed[seed] = records.load_records(folder, profile=args.profile)
    about = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "library": __version__,
        "torch": torch.__version__,
        "commit": commit(),
        "seconds": seconds,
        "failures": failures,
        "wall_s": round(time.perf_counter() - start),
    }
    table = records.seed_table(per_seed, profile=args.profile, about=about)
    out = Path(args.out) if args.out else ROOT / "book" / "records" / f"seeds-{args.profile}.json"
    if args.chapters and out.exists():
        table = keep_other_chapters(table, json.loads(out.read_text()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    for ch, rows in table["chapters"].items():
        for key, entry in rows.items():
            verdicts = sorted(set(entry["verdicts"].values()))
            if len(verdicts) > 1:
                print(f"chapter {ch}: verdict depends on the seed: {key[:70]!r} {entry['verdicts']}")
    print(f"wrote {out}; {len(failures)} failed runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
