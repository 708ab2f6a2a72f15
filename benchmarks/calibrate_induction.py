"""Chapter 3's step-size calibration: does Adam's step make the cliff?

    python benchmarks/calibrate_induction.py [--seed 0] [--out book/records/calibration-ch03.json]

Trains the chapter's main run (the book profile's Fig. 3 setting, the chapter's three seeds for
``ICLBOOK_SEED = --seed``) at three Adam steps, each long enough for every seed to jump, and
records per run the onset of the jump, the rise / onset ratio, the linger ratio, the share of
steps on the plateau and the final accuracies. The chapter prints this record and takes the
thresholds of its Fig. 3 checks from it (a few minutes on the 2-core machine; the chapter itself
trains only the book profile's step).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from iclbook import __version__, curves, runtime
from iclbook import induction as ih

#: (Adam step, training steps): the book profile's step last
STEPS = ((3e-4, 4000), (6e-4, 2500), (1e-3, 2000))


def calibrate(seed: int) -> dict:
    cfg = ih.CONFIGS["book"]
    seeds = [1000 * seed + i for i in range(cfg.seeds)]
    base = cfg.B / cfg.N
    rows = []
    for lr, steps in STEPS:
        start = time.perf_counter()
        runs = ih.train_runs(cfg, seeds, lr=lr, steps=steps, eval_every=cfg.eval_every, desc=f"Adam {lr:g}")
        seconds = time.perf_counter() - start
        for r in runs:
            tr = curves.transition(*r.series("IC"), base)
            rows.append(
                {
                    "lr": lr,
                    "steps": steps,
                    "seed": r.seed,
                    **{k: tr[k] for k in ("onset", "t_top", "rise_ratio", "linger", "plateau_fraction")},
                    **{k: r.final[k] for k in ("IC", "IC2", "IW")},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        print(f"Adam {lr:g}: {seconds:.0f} s", flush=True)
    return {
        "schema": "iclbook.calibration/1",
        "chapter": "03",
        "what": "Adam step sweep of the main run",
        "eval_every": cfg.eval_every,
        "seed": seed,
        "library": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "book" / "records" / "calibration-ch03.json"
    )
    args = parser.parse_args()
    runtime.seed_everything(args.seed)
    record = calibrate(args.seed)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
