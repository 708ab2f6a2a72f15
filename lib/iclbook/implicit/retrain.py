"""Pretrain the chapter's tiny GPT and write the shipped checkpoint (package data).

    python -m iclbook.implicit.retrain            # the recipe of pretrain.PretrainConfig()
    python -m iclbook.implicit.retrain --steps 200 --out /tmp/lm   # a quick try

Writes ``<out>/tinylm.pt`` (a ``state_dict`` in float32, loaded with ``weights_only=True``) and
``<out>/tinylm.json`` (the configs, the loss curve, in-training evaluations, the seconds taken, the
torch version and the SHA-256 of the ``.pt`` file). Checkpoints are written every
``--save-every`` steps, so an interrupted run loses little.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from iclbook.implicit import data, pretrain
from iclbook.implicit.model import LMConfig, TinyLM
from iclbook.implicit.pretrain import label_accuracy_by_context


def save(model: TinyLM, history: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    pt = out / "tinylm.pt"
    torch.save({k: v.detach().cpu().float() for k, v in model.state_dict().items()}, pt)
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()
    record = dict(history, sha256=digest, torch=torch.__version__)
    (out / "tinylm.json").write_text(json.dumps(record, indent=1))
    return digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = pretrain.PretrainConfig()
    parser.add_argument("--steps", type=int, default=default.steps)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=pretrain.WEIGHTS)
    parser.add_argument("--save-every", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = TinyLM(LMConfig(momentum=args.momentum))
    cfg = dataclasses.replace(default, steps=args.steps, seed=args.seed)
    # p_plain=0.1: the probe batch the shipped checkpoints were evaluated on (labels in 90% of rows)
    probe_batch = data.pretraining_batch(128, cfg.seq_len, torch.Generator().manual_seed(10**6), p_plain=0.1)

    def evaluate(m: TinyLM) -> dict:
        return label_accuracy_by_context(m, probe_batch)

    history = pretrain.pretrain(
        model, cfg, evaluate=evaluate, eval_every=args.save_every, on_eval=lambda m, h: save(m, h, args.out)
    )
    print("sha256", save(model, history, args.out))


if __name__ == "__main__":
    main()
