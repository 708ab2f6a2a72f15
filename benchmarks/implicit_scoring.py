"""Chapter 2's scoring: the shared demonstrations run once (a prefix cache) against the plain pass
over every whole prompt, as a ratio measured in one run.

    python benchmarks/implicit_scoring.py [--tasks sst2 cb] [--n 500]

For each task, ``n`` test prompts behind the same ``k = 16`` demonstrations (the book profile's
test split) are scored by :func:`iclbook.implicit.probe.label_logprobs` both ways on the shipped
model, back to back; the script prints the best of three wall times of each, their ratio, and
the largest difference between the two sets of log-probabilities (float rounding) and whether
any prediction differs. ICL scoring (seven demonstration seeds on dev, then test with canonical
and nonce labels, per task and evaluation seed) is most of what the chapter's task runs did
before the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from timing import best_of  # noqa: E402

from iclbook.implicit import data, pretrain, probe  # noqa: E402
from iclbook.implicit import experiment as ex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cb"], choices=data.TASK_NAMES)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    model, _ = pretrain.load_shipped()
    cfg = ex.CONFIGS["book"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped TinyLM, k={cfg.k}")
    for name in args.tasks:
        pool, _, test = ex.splits(name, cfg, 0)
        test = data.Dataset(test.task, test.inputs[: args.n], test.classes[: args.n], test.cues)
        demos = probe.demonstrations(pool, cfg.k, ex.demo_generator(0, 1))
        prompts, _ = probe.build_prompts(test, demos, 256)
        cand = data.encode(list(test.task.labels))
        shared = probe.shared_prefix(prompts)

        def score(prompts=prompts, cand=cand):
            return probe.label_logprobs(model, prompts, cand)

        cached, cached_s = score(), best_of(score)
        keep, probe.MIN_SHARED = probe.MIN_SHARED, 10**9  # switch the cache off
        try:
            plain, plain_s = score(), best_of(score)
        finally:
            probe.MIN_SHARED = keep
        mean_len = sum(map(len, prompts)) / len(prompts)
        same = bool((cached.argmax(-1) == plain.argmax(-1)).all())
        print(
            f"{name}: {len(prompts)} prompts of {mean_len:.0f} tokens, {shared} shared: "
            f"plain {plain_s:.3f} s, cached {cached_s:.3f} s: x{plain_s / cached_s:.1f}; "
            f"max |diff| {float((cached - plain).abs().max()):.1e}, "
            f"predictions {'identical' if same else 'DIFFER'}"
        )


if __name__ == "__main__":
    main()
