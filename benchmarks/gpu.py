"""The book on a CUDA machine: smoke runs on the GPU, CPU/GPU parity of every chapter's ledger,
and the paper profile's time where it fits. `benchmarks/gpu.sh` calls it; so can you:

    python benchmarks/gpu.py all --out gpu-run          # smoke on cuda and cpu, parity, paper timings
    python benchmarks/gpu.py run --device cpu --profile smoke --chapters 04 --out a
    python benchmarks/gpu.py compare a b                # parity of two runs' ledgers

A chapter runs without Jupyter (the GPU image has no kernel): its paired notebook's code cells are
executed in order in a fresh Python process, from book/, with matplotlib's Agg backend and, where
IPython is missing, a stand-in for ``IPython.display``. Each run writes the chapter's ledger record
(``ICLBOOK_RECORDS``) and its wall time.

**Parity** of two runs of one chapter, row by row of the ledger (rows matched by key):

* every identity and sanity row holds in both runs (a broken one is a bug on that device);
* a claim's or control's verdict agrees, or else its value agrees within ``rtol`` (default 0.1)
  or ``atol`` (default 0.02): training on a GPU rounds differently and a trajectory near a cliff
  can land on the other side of a threshold, which is a difference in the number, not a bug.

The table printed at the end is meant to be pasted into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = {p.stem[:2]: p for p in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))}
PAPER_BUDGET_S = 480  # the paper-profile timings stop starting new chapters after 8 minutes in all


# ---------------------------------------------------------------------------------------------
# running one chapter without Jupyter
# ---------------------------------------------------------------------------------------------


def code_cells(notebook: Path) -> list[str]:
    """The notebook's code cells as plain Python: the Colab install cell (tagged remove-cell,
    holding ``%pip``) and any other IPython magic line are dropped."""
    nb = json.loads(notebook.read_text())
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if "remove-cell" in cell.get("metadata", {}).get("tags", []) and "%pip" in source:
            continue
        cells.append("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    return cells


def _display_stand_in() -> None:
    """``IPython.display.Markdown`` and ``display`` where IPython is not installed."""
    try:
        import IPython.display  # noqa: F401

        return
    except ImportError:
        pass
    import types

    display_mod = types.ModuleType("IPython.display")

    class Markdown(str):
        pass

    display_mod.Markdown = Markdown
    display_mod.display = lambda *objs, **_: [print(o) for o in objs]
    pkg = types.ModuleType("IPython")
    pkg.display = display_mod
    sys.modules["IPython"], sys.modules["IPython.display"] = pkg, display_mod


def execute(notebook: Path) -> None:
    """Run the notebook's code cells in this process (the ``_exec`` subcommand)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    _display_stand_in()
    import matplotlib.pyplot as plt

    os.chdir(notebook.parent)
    scope: dict = {"__name__": "__main__"}
    for i, src in enumerate(code_cells(notebook)):
        try:
            exec(compile(src, f"{notebook.name}[cell {i}]", "exec"), scope)
        finally:
            plt.close("all")


def run_chapter(chapter: str, *, device: str, profile: str, seed: int, out: Path, timeout: float | None = None) -> dict:
    """One chapter in a fresh process on ``device``; returns ``{chapter, device, profile, seconds, ok, error}``
    and leaves its ledger record under ``out/records``."""
    notebook = CHAPTERS.get(chapter) or Path(chapter)
    if not notebook.suffix == ".ipynb" or not notebook.exists():
        raise ValueError(f"no chapter {chapter!r}; have {sorted(CHAPTERS)} (or give a notebook's path)")
    records, cache = out / "records", out / "cache"
    records.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ICLBOOK_DEVICE": device,
        "ICLBOOK_PROFILE": profile,
        "ICLBOOK_SEED": str(seed),
        "ICLBOOK_RECORDS": str(records),
        "ICLBOOK_CACHE": str(cache),
        "ICLBOOK_PROGRESS": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "_exec", str(notebook.resolve())],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        ok, error = proc.returncode == 0, proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    except subprocess.TimeoutExpired:
        ok, error = False, [f"stopped after {timeout:.0f} s"]
    return {
        "chapter": notebook.stem[:2],
        "device": device,
        "profile": profile,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "ok": ok,
        "error": " ".join(error),
    }


def run_many(
    chapters: list[str], *, device: str, profile: str, seed: int, out: Path, budget: float | None = None
) -> list[dict]:
    results, spent = [], 0.0
    for ch in chapters:
        if budget is not None and spent >= budget:
            results.append(
                {
                    "chapter": ch,
                    "device": device,
                    "profile": profile,
                    "seed": seed,
                    "seconds": None,
                    "ok": False,
                    "error": f"not started: {budget:.0f} s budget spent",
                }
            )
            continue
        res = run_chapter(
            ch,
            device=device,
            profile=profile,
            seed=seed,
            out=out,
            timeout=None if budget is None else max(budget - spent, 1),
        )
        spent += res["seconds"] or 0
        results.append(res)
        print(
            f"  {ch} on {device} at {profile}: {res['seconds']} s {'ok' if res['ok'] else 'FAILED ' + res['error']}",
            flush=True,
        )
    (out / "runs.json").write_text(json.dumps(results, indent=1))
    return results


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


def load_rows(folder: Path) -> dict[str, dict[str, dict]]:
    """``{chapter: {row key: row}}`` from a run's ledger records."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((folder / "records").glob("*.json")) if (folder / "records").exists() else []:
        rec = json.loads(path.read_text())
        out[rec["chapter"]] = {r["key"]: r for r in rec["rows"]}
    return out


def row_parity(a: dict, b: dict, *, rtol: float = 0.1, atol: float = 0.02) -> str | None:
    """None when two runs' rows agree in the sense of the module's docstring, else the reason."""
    if a["kind"] in ("identity", "sanity"):
        broken = [side for side, r in (("first", a), ("second", b)) if r.get("verdict") != "holds"]
        return f"{a['kind']} fails in the {' and '.join(broken)} run" if broken else None
    if a.get("verdict") == b.get("verdict"):
        return None
    va, vb = a.get("value"), b.get("value")
    if va is not None and vb is not None and abs(va - vb) <= max(atol, rtol * max(abs(va), abs(vb))):
        return None
    return f"verdict {a.get('verdict')} vs {b.get('verdict')}, value {va} vs {vb}"


def compare(first: Path, second: Path, *, rtol: float = 0.1, atol: float = 0.02) -> dict[str, list[str]]:
    """``{chapter: [differences]}`` for the chapters both runs have (an empty list: parity)."""
    a, b = load_rows(first), load_rows(second)
    report: dict[str, list[str]] = {}
    for ch in sorted(set(a) & set(b)):
        diffs = [
            f"{key}: only in the {'first' if key in a[ch] else 'second'} run" for key in sorted(set(a[ch]) ^ set(b[ch]))
        ]
        for key in sorted(set(a[ch]) & set(b[ch])):
            why = row_parity(a[ch][key], b[ch][key], rtol=rtol, atol=atol)
            if why:
                diffs.append(f"{key}: {why}")
        report[ch] = diffs
    return report


def table(runs: list[dict], parity: dict[str, list[str]] | None = None) -> str:
    lines = ["| chapter | device | profile | seconds | result | CPU/GPU parity |", "|---|---|---|---|---|---|"]
    for r in runs:
        par = (
            ""
            if parity is None or r["device"] == "cpu" or r["profile"] != "smoke"
            else (
                "n/a"
                if r["chapter"] not in parity
                else "holds"
                if not parity[r["chapter"]]
                else f"{len(parity[r['chapter']])} difference(s)"
            )
        )
        lines.append(
            f"| {r['chapter']} | {r['device']} | {r['profile']} | {r['seconds']} | "
            f"{'ok' if r['ok'] else 'failed: ' + r['error']} | {par} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def pick_device(requested: str) -> str:
    """``auto``: cuda when torch sees a GPU, else cpu; an explicit ``cuda`` without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: torch {torch.__version__} sees no CUDA device")
    return requested


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run chapters on one device and profile")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--profile", default="smoke", choices=["smoke", "book", "paper"])
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--chapters", nargs="+", default=sorted(CHAPTERS), choices=sorted(CHAPTERS))
    r.add_argument("--budget", type=float, default=None, help="stop starting chapters after this many seconds")
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="parity of two runs' ledgers")
    c.add_argument("first", type=Path)
    c.add_argument("second", type=Path)
    c.add_argument("--rtol", type=float, default=0.1)
    c.add_argument("--atol", type=float, default=0.02)
    a = sub.add_parser("all", help="smoke on the GPU and the CPU, their parity, then the paper profile on the GPU")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--chapters", nargs="+", default=sorted(CHAPTERS), choices=sorted(CHAPTERS))
    a.add_argument("--paper-budget", type=float, default=PAPER_BUDGET_S)
    a.add_argument("--device", default="auto")
    e = sub.add_parser("_exec", help=argparse.SUPPRESS)
    e.add_argument("notebook", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cmd == "_exec":
        execute(args.notebook.resolve())
        return 0
    if args.cmd == "compare":
        report = compare(args.first, args.second, rtol=args.rtol, atol=args.atol)
        for ch, diffs in report.items():
            print(f"{ch}: " + ("parity holds" if not diffs else "\n  ".join([f"{len(diffs)} difference(s)"] + diffs)))
        return 0 if report and not any(report.values()) else 1
    if args.cmd == "run":
        runs = run_many(
            args.chapters,
            device=pick_device(args.device),
            profile=args.profile,
            seed=args.seed,
            out=args.out,
            budget=args.budget,
        )
        print(table(runs))
        return 0 if all(r["ok"] for r in runs) else 1
    device = pick_device(args.device)
    out = args.out
    print(f"smoke on {device}:", flush=True)
    gpu = run_many(args.chapters, device=device, profile="smoke", seed=0, out=out / "smoke-gpu")
    print("smoke on cpu:", flush=True)
    cpu = run_many(args.chapters, device="cpu", profile="smoke", seed=0, out=out / "smoke-cpu")
    parity = compare(out / "smoke-cpu", out / "smoke-gpu")
    for ch, diffs in parity.items():
        print(f"parity {ch}: " + ("holds" if not diffs else "; ".join(diffs)))
    print(f"paper profile on {device} (at most {args.paper_budget:.0f} s in all):", flush=True)
    paper = run_many(
        args.chapters, device=device, profile="paper", seed=0, out=out / "paper-gpu", budget=args.paper_budget
    )
    text = table(gpu + cpu + paper, parity)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if all(r["ok"] for r in gpu + cpu) and not any(parity.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
