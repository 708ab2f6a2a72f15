"""Chapter 3's network: training steps per second, fast forward vs the author's direct form, and a
batched ensemble of seeds vs the same seeds one after another.

    python benchmarks/induction.py [--steps 150] [--seeds 3]

Ratios are measured back to back in one run. The "direct" model computes every product of the
author's code at every token (three projections per layer, the MLP at all 17 tokens); the fast
one reassociates layer 1 and runs layer 2 and the classifier at the query only (both give the same
logits, see tests/test_induction.py). Last, one checkpoint's measures (``ih.measure``: one
forward pass per evaluation set, reused by every statistic) against the same statistics each
computed on its own (nine forward passes over the four sets of 1,000 sequences, as before).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from timing import best_of
from torch import nn

from iclbook import induction as ih
from iclbook import runtime, train


class Direct(nn.Module):
    """The same weights, the author's direct computation."""

    def __init__(self, net: ih.InductionNet):
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net.direct(tokens)[0]


def steps_per_second(cfg: ih.Config, models: list[nn.Module], steps: int) -> float:
    task = ih.make_task(cfg, runtime.generator(0))

    def draw(g: torch.Generator):
        s = ih.sample(task, cfg.batch, cfg, g)
        return s.tokens, s.target

    gens = [runtime.generator(100 + i) for i in range(len(models))]
    train.train(models, ih.cross_entropy, draw, steps=5, lr=3e-4, generators=gens, desc="warm-up")
    start = time.perf_counter()
    train.train(models, ih.cross_entropy, draw, steps=steps, lr=3e-4, generators=gens, desc="timed")
    return steps / (time.perf_counter() - start)


def measures_one_by_one(model: nn.Module, sets: dict) -> dict:
    """The checkpoint statistics each from its own forward pass (what ``ih.measure`` did)."""
    with torch.no_grad():
        out = {name: float((ih.predict(model, st) == st.target).float().mean()) for name, st in sets.items()}
        test = sets["test"]
        out["loss"] = float(nn.functional.cross_entropy(model(test.tokens), test.target))
        out.update(ih.progress_measures(model, sets["IC"]))
        acts = model.mlp.hidden(model.query_state(test.tokens))
        out["live"] = min(float((a > 0).float().mean()) for a in acts)
        out["spread"] = float(model(test.tokens).std(dim=0).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    device = runtime.device()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    book = ih.CONFIGS["book"]
    for batch in (64, 128):
        cfg = replace(book, batch=batch)
        fast = steps_per_second(cfg, [ih.InductionNet(cfg, runtime.generator(0))], args.steps)
        direct = steps_per_second(cfg, [Direct(ih.InductionNet(cfg, runtime.generator(0)))], args.steps)
        print(f"d={cfg.d}, batch {batch}: fast {fast:.1f} steps/s, direct {direct:.1f} steps/s: x{fast / direct:.2f}")

    small = replace(book, Nmax=16, D=31)  # the spec's scaled-down model, d = 64
    for cfg in (book, small):
        seq = sum(
            1 / steps_per_second(cfg, [ih.InductionNet(cfg, runtime.generator(s))], args.steps)
            for s in range(args.seeds)
        )
        ens = 1 / steps_per_second(
            cfg, [ih.InductionNet(cfg, runtime.generator(s)) for s in range(args.seeds)], args.steps
        )
        print(
            f"d={cfg.d}, {args.seeds} seeds: sequential {seq * 1e3:.1f} ms per step of all seeds, "
            f"ensemble {ens * 1e3:.1f} ms: x{seq / ens:.2f}"
        )

    task = ih.make_task(book, runtime.generator(1))
    sets = ih.eval_sets(task, book, runtime.generator(2))
    for net in (ih.InductionNet, ih.MinimalNet):
        model = net(book, runtime.generator(0))
        one = best_of(lambda m=model: ih.measure(m, sets))
        each = best_of(lambda m=model: measures_one_by_one(m, sets))
        print(
            f"{net.__name__} checkpoint, 4 x {book.n_eval} sequences: one pass per set {one * 1e3:.0f} ms, "
            f"each measure on its own {each * 1e3:.0f} ms: x{each / one:.2f}"
        )


if __name__ == "__main__":
    main()
