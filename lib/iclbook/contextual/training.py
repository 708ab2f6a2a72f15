"""Training chapter 4's blocks through the shared loop and the trained-weight cache."""

from __future__ import annotations

import torch
from torch import nn

from iclbook import runtime, train
from iclbook.contextual.config import Config
from iclbook.contextual.data import sample_prompts
from iclbook.contextual.measures import theorem_check
from iclbook.contextual.model import BlockStack, ContextualBlock, Variant, make_block, make_stack


def mse(block: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the block's prediction on ``(tokens, target)``: the training loss.
    A model that ignores the context and predicts 0 scores ``E[<w, x_q>^2] = d``."""
    tokens, target = batch
    return ((block(tokens) - target) ** 2).mean()


def train_blocks(
    cfg: Config,
    seeds: list[int],
    *,
    kind: str = "softmax",
    variant: Variant = "plain",
    steps: int,
    lr: float,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    depth: int = 1,
    desc: str | None = None,
) -> tuple[list[ContextualBlock] | list[BlockStack], train.History]:
    """Train one block (or, with ``depth > 1``, one stack of blocks) per seed on fresh
    regression prompts, all seeds as one batched ensemble.

    Each member is initialised from its seed and draws its own training prompts. With ``val``,
    :func:`theorem_check` runs on it for every member every ``cfg.checkpoint_every`` steps, so the
    history holds the paper's Fig. 1 (``history["checkpoints"][k]["members"]``). Weights and
    history go through the trained-weight cache (:func:`iclbook.runtime.cached`).
    """
    if not seeds:
        raise ValueError("need at least one seed")
    if depth > 1 and val is not None:
        raise ValueError("checkpoint checks (val) are written for single blocks, not stacks")
    if depth > 1:
        models = [make_stack(kind, cfg, depth, variant, seed=s) for s in seeds]
    else:
        models = [make_block(kind, cfg, variant, seed=s) for s in seeds]

    def sample(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_prompts(cfg.batch, N=cfg.N, d=cfg.d, generator=gen)

    def on_checkpoint(step: int, members: list[nn.Module]) -> dict:
        return {"members": [theorem_check(m, *val) for m in members]}

    def run() -> dict:
        return train.train(
            models,
            mse,
            sample,
            steps=steps,
            lr=lr,
            generators=[runtime.stream("batches", s) for s in seeds],
            checkpoint_every=cfg.checkpoint_every if val is not None else None,
            on_checkpoint=on_checkpoint if val is not None else None,
            desc=desc or f"{kind}/{variant}",
        )

    val_digest = None if val is None else float(val[0].sum() + val[1].sum())
    name = f"{kind}-{variant}" + (f"-x{depth}" if depth > 1 else "")
    history = train.cached_training(
        "04", name, cfg, models, run, uses=__name__, seeds=list(seeds), steps=steps, lr=lr, val=val_digest
    )
    return models, history
