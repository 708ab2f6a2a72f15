"""The host unit: a fixed small workload like the chapters', timed on this machine.

    python benchmarks/host_unit.py            # prints the unit in seconds, and a matmul for reference

Hosts of the same kind differ by 2-3x (the same commit's book build took 14 min on one 2-core
machine and 30 on another), so a chapter's time in seconds says as much about the host as about
the chapter. The unit is what a chapter's training is made of: a few hundred Adam steps of a tiny
two-layer attention network (d = 64, 17 tokens, batch 64, one thread), bound by per-operation cost
rather than FLOPs. ``benchmarks/chapter_times.py`` measures it in the same run as the chapters and
states every chapter's time as a multiple of it, and the budgets in ``benchmarks/README.md`` are
in host units: a slow host no longer looks like a regression, and a regression no longer hides
on a fast host.

The workload is written out here, on purpose independent of the library: an edit of the library
must never change the yardstick it is measured with. The unit is the median of ``repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

STEPS, BATCH, TOKENS, D, CLASSES = 300, 64, 17, 64, 32


class _TwoLayerAttention(nn.Module):
    """Two causal single-head attention layers and a two-layer ReLU read-out at the last token."""

    def __init__(self, gen: torch.Generator):
        super().__init__()
        s = D**-0.5
        self.w = nn.ParameterList([nn.Parameter(torch.randn(D, D, generator=gen) * s) for _ in range(6)])
        self.fc1 = nn.Parameter(torch.randn(D, D, generator=gen) * s)
        self.fc2 = nn.Parameter(torch.randn(CLASSES, D, generator=gen) * s)
        self.register_buffer("mask", torch.ones(TOKENS, TOKENS, dtype=torch.bool).tril())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for q, k, v in (self.w[0:3], self.w[3:6]):
            att = ((x @ q) @ (x @ k).transpose(-1, -2)).masked_fill(~self.mask, float("-inf")).softmax(-1)
            x = x + att @ (x @ v)
        return torch.relu(x[:, -1] @ self.fc1.T) @ self.fc2.T


def workload(seed: int = 0) -> float:
    """Seconds for :data:`STEPS` Adam steps of the fixed network on fresh random batches."""
    gen = torch.Generator().manual_seed(seed)
    model = _TwoLayerAttention(gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(STEPS):
        x = torch.randn(BATCH, TOKENS, D, generator=gen)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` float32 matmul at the current thread count (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def unit(repeats: int = 3) -> float:
    """The host unit in seconds: the median of ``repeats`` runs of :func:`workload`, one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workload(seed=99)  # warm-up: allocator, kernels
        return statistics.median(workload(seed=i) for i in range(repeats))
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    u = unit(args.repeats)
    threads = torch.get_num_threads()
    print(f"host unit: {u:.2f} s ({STEPS} Adam steps of a two-layer attention net, 1 thread; median of {args.repeats})")
    print(f"reference: 1024x1024 float32 matmul at {matmul_gflops():.0f} GFLOP/s with {threads} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
