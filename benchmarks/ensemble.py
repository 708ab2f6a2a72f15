"""How fast the shared training loop runs chapter 4's block, as ratios measured in one run.

    python benchmarks/ensemble.py [--seeds 3] [--steps 300] [--dtype float64]

Prints three comparisons, each timed back to back in this process (absolute times on a shared
2-core machine are noisy; ratios taken in one run are not):

1. a batched ensemble of S seeds (``train.train`` on a list of models, one vmapped model) against
   the same S models trained one after the other;
2. one training step (forward + backward + Adam) against a plain square matmul of the same
   floating-point operations (counted by ``torch.utils.flop_counter``), and against the
   machine's large-matmul throughput: how close the step comes to the hardware's limit;
3. all prefix outputs of softmax attention in one masked pass (each row normalised by its own
   maximum) against running the layer on every prefix, the path Figures 2 and 3 of the chapter use.
"""

from __future__ import annotations

import argparse
import os

import torch
from timing import best_of
from torch.utils.flop_counter import FlopCounterMode

from iclbook import contextual as cx
from iclbook import runtime, train


def matmul_seconds_per_flop(n: int, dtype: torch.dtype) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    reps = max(3, int(2e9 / (2 * n**3)))
    t = best_of(lambda: [a @ b for _ in range(reps)])
    return t / (reps * 2 * n**3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = parser.parse_args()
    os.environ["ICLBOOK_PROGRESS"] = "0"
    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)
    cfg = cx.CONFIGS["book"]
    seeds = list(range(args.seeds))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, "
        f"chapter 4 block (N={cfg.N}, batch {cfg.batch}, {cfg.heads} heads, width {cfg.width})"
    )

    def sample(g):
        return cx.sample_prompts(cfg.batch, N=cfg.N, d=cfg.d, generator=g, dtype=dtype)

    def sequential():
        for s in seeds:
            train.train(
                cx.make_block("softmax", cfg, seed=s, dtype=dtype),
                cx.mse,
                sample,
                steps=args.steps,
                lr=cfg.lr,
                generators=runtime.generator(s),
            )

    def batched():
        train.train(
            [cx.make_block("softmax", cfg, seed=s, dtype=dtype) for s in seeds],
            cx.mse,
            sample,
            steps=args.steps,
            lr=cfg.lr,
            generators=[runtime.generator(s) for s in seeds],
        )

    t_seq, t_bat = best_of(sequential), best_of(batched)
    print(f"\n1. ensemble of {args.seeds} seeds x {args.steps} steps")
    print(f"   sequential {t_seq:6.2f} s   batched {t_bat:6.2f} s   speed-up x{t_seq / t_bat:.2f}")

    block = cx.make_block("softmax", cfg, seed=0, dtype=dtype)
    opt = torch.optim.Adam(block.parameters(), lr=cfg.lr)
    batch = sample(runtime.generator(0))

    def step():
        opt.zero_grad()
        cx.mse(block, batch).backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        cx.mse(block, batch).backward()
    flops = counter.get_total_flops()
    t_step = best_of(lambda: [step() for _ in range(200)]) / 200
    n_eq = max(2, round((flops / 2) ** (1 / 3)))
    t_eq = matmul_seconds_per_flop(n_eq, dtype) * flops
    peak = 1 / matmul_seconds_per_flop(1024, dtype)
    print(f"\n2. one training step: {flops / 1e6:.2f} MFLOP (forward + backward), {t_step * 1e3:.2f} ms")
    print(f"   a {n_eq}x{n_eq} matmul of the same FLOPs: {t_eq * 1e3:.3f} ms  ->  step/matmul x{t_step / t_eq:.1f}")
    print(
        f"   step throughput {flops / t_step / 1e9:.2f} GFLOP/s = {100 * flops / t_step / peak:.1f}% of a "
        f"1024x1024 matmul ({peak / 1e9:.1f} GFLOP/s)"
    )

    tokens, _ = cx.sample_prompts(100, N=cfg.N, d=cfg.d, generator=runtime.generator(1), dtype=dtype)
    context, query = cx.split(tokens)
    with torch.no_grad():
        t_fast = best_of(lambda: [block.layer.prefixes(context, query) for _ in range(20)]) / 20
        t_loop = best_of(lambda: cx.ContextualLayer.prefixes(block.layer, context, query))
    print(
        f"\n3. all {cfg.N + 1} prefix outputs for 100 prompts: one masked pass {t_fast * 1e3:.2f} ms, "
        f"one pass per prefix {t_loop * 1e3:.1f} ms  ->  x{t_loop / t_fast:.0f}"
    )


if __name__ == "__main__":
    main()
