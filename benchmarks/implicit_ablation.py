"""Why chapter 2's tiny GPT has ALiBi and token mixing: an ablation on the bare copying task.

    python benchmarks/implicit_ablation.py                 # 4 variants x 1,500 steps, ~4 min on 2 cores
    python benchmarks/implicit_ablation.py --steps 300     # a quick look

Each row of a batch is ``<s> c_1 Label: y_1 c_2 Label: y_2 ...``: per row, ``K`` cue words are
mapped to ``K`` label words at random, so a label can only be predicted by finding an earlier
example with the same cue and copying its label, the circuit that ICL needs in the chapter (the
cue sits two tokens before its label, as the last input word does before ``Sentiment: y``). The
loss is on the label tokens only. For each variant of :class:`TinyLM` (2 layers, d = 64, 4 heads)
the script prints the accuracy on held-out rows (labels after the 6th example) every 100 steps,
then the first step at which it reached 0.8.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from iclbook.implicit import data  # noqa: E402
from iclbook.implicit.model import LMConfig, TinyLM  # noqa: E402

CUES = torch.tensor(data.encode(data.CUES))
LABELS = torch.tensor(data.encode(data.LABEL_POOL))
MARKER = data.TOKEN_ID["Label:"]


def copy_batch(rows: int, length: int, classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, length + 1)`` token ids and the mask of the label tokens."""
    n = length // 3 + 1
    cues = torch.stack([CUES[torch.randperm(len(CUES), generator=gen)[:classes]] for _ in range(rows)])
    labels = torch.stack([LABELS[torch.randperm(len(LABELS), generator=gen)[:classes]] for _ in range(rows)])
    y = torch.randint(classes, (rows, n), generator=gen)
    body = torch.stack([cues.gather(1, y), torch.full((rows, n), MARKER), labels.gather(1, y)], 2).reshape(rows, -1)
    seq = torch.cat([torch.full((rows, 1), data.TOKEN_ID[data.BOS]), body], 1)[:, : length + 1]
    is_label = torch.zeros_like(seq, dtype=torch.bool)
    is_label[:, 3::3] = True
    return seq, is_label


def run(
    positions: str,
    mix: int,
    steps: int,
    seed: int,
    length: int = 64,
    classes: int = 3,
    batch: int = 64,
    lr: float = 1e-3,
) -> tuple[list[tuple[int, float]], float]:
    torch.manual_seed(seed)
    model = TinyLM(LMConfig(layers=2, positions=positions, mix=mix))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(seed + 1)
    held, held_mask = copy_batch(256, length, classes, torch.Generator().manual_seed(99))
    held_mask[:, :19] = False  # labels after the 6th example
    curve = []
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 200)
        seq, mask = copy_batch(batch, length, classes, gen)
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits[mask[:, 1:]], seq[:, 1:][mask[:, 1:]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            with torch.no_grad():
                pred = model(held[:, :-1]).argmax(-1)
            m = held_mask[:, 1:]
            curve.append((step + 1, float((pred[m] == held[:, 1:][m]).float().mean())))
    return curve, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"{'variant':28s} {'acc. every 300 steps':40s} {'first step >= 0.8':>18s} {'seconds':>8s}")
    for positions, mix in (("alibi", 3), ("alibi", 0), ("sinusoidal", 3), ("sinusoidal", 0)):
        curve, seconds = run(positions, mix, args.steps, args.seed)
        first = next((s for s, a in curve if a >= 0.8), None)
        name = f"{positions}, mix={mix}"
        shown = " ".join(f"{a:.2f}" for s, a in curve if s % 300 == 0)
        print(f"{name:28s} {shown:40s} {str(first or 'never'):>18s} {seconds:8.0f}", flush=True)


if __name__ == "__main__":
    main()
