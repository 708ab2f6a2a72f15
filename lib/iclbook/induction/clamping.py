"""Clamping, after Singh et al. (2024): the minimal model trained with one of its hook points held
fixed from step 0, to see how much of the wait before the jump a sub-circuit accounts for; and a
knock-out of the full network's previous-token attention after the jump.

:func:`train_clamped` trains :class:`~iclbook.induction.model.MinimalNet` as
:func:`~iclbook.induction.training.train_runs` does (the same tasks, evaluation sets, batches,
optimisers and measures for the same seeds), with ``internals.overriding(model, **clamp)`` in
place for the whole training and every checkpoint's measures. ``CLAMPS`` names the clamps the
chapter runs; a clamp is a constant put in place of a named activation, so its name and value key
the weight cache.

:func:`knock_out` removes, from layer 1's attention map, each label token's attention to the
token ``offset`` places before it (``offset=1``: its own item, the previous-token head) and
renormalises the row; :func:`knocked_out_accuracy` scores a trained network with it in place.

A module of its own so that the weight cache of every other run of chapters 3 and 5 stays keyed on
:mod:`iclbook.induction.training` alone: this one's key hashes its own source as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import torch

from iclbook import internals, runtime, train
from iclbook.induction.config import Config
from iclbook.induction.data import Sequences, Task, eval_sets, make_task, sample
from iclbook.induction.measures import measure, predict
from iclbook.induction.model import InductionNet, MinimalNet, cross_entropy
from iclbook.induction.training import Run, optimizer_args

#: The clamps the chapter runs, by name: hook point -> constant (broadcast to the activation).
#: ``prev_token`` is sigmoid(beta1), the previous-token head's strength (0.5 at initialisation).
CLAMPS: dict[str, dict[str, float]] = {
    "copy": {"prev_token": 1.0},  # a perfect previous-token head from step 0
    "no copy": {"prev_token": 0.0},  # no previous-token head at all: the match cannot form
}


def train_clamped(
    cfg: Config,
    seeds: Sequence[int],
    clamp: str,
    *,
    scalar_optimizer: Mapping[str, Any] | None = None,
    cache_name: str | None = None,
    desc: str = "clamped minimal model",
    **changes: Any,
) -> list[Run]:
    """Train one minimal model per seed with the clamp ``CLAMPS[clamp]`` in place from step 0.

    Everything else is :func:`~iclbook.induction.training.train_runs` with ``net="minimal"``
    for the same ``cfg`` (``changes`` replace its fields), ``seeds`` and ``scalar_optimizer``:
    the same task, evaluation sets and batches per seed, so a run differs from its unclamped
    twin only by the clamp. Each run's history records the clamped activation as the model sees
    it (ILA1 reads the clamped previous-token strength). Raises ``ValueError`` for an unknown
    clamp or no seeds."""
    if clamp not in CLAMPS:
        raise ValueError(f"unknown clamp {clamp!r}; the clamps are {sorted(CLAMPS)}")
    if not seeds:
        raise ValueError("train_clamped needs at least one seed")
    cfg = replace(cfg, **changes)
    overrides = CLAMPS[clamp]
    device = runtime.device()
    tasks = [make_task(cfg, runtime.stream("task", s)) for s in seeds]
    sets = [
        {k: v.map(lambda t: t.to(device)) for k, v in eval_sets(t, cfg, runtime.stream("eval-sets", s)).items()}
        for t, s in zip(tasks, seeds)
    ]
    models = [MinimalNet(cfg, runtime.generator(s)).to(device) for s in seeds]
    groups = (
        None
        if scalar_optimizer is None
        else {k: {"weight_decay": 0.0, **scalar_optimizer} for k in ("beta1", "alpha", "beta2")}
    )

    def sampler(task: Task):
        def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            s = sample(task, cfg.batch, cfg, g)
            return s.tokens.to(device), s.target.to(device)

        return draw

    def on_checkpoint(step: int, members: list[torch.nn.Module]) -> dict:
        rows = []
        for m, st in zip(members, sets):
            row = measure(m, st)
            row.update({k: getattr(m, k).item() for k in ("beta1", "alpha", "beta2")})
            rows.append(row)
        return {"members": rows}

    def run() -> dict:
        with ExitStack() as stack:
            for m in models:
                stack.enter_context(internals.overriding(m, **overrides))
            return train.train(
                models,
                cross_entropy,
                [sampler(t) for t in tasks],
                steps=cfg.steps,
                generators=[runtime.stream("batches", s) for s in seeds],
                checkpoint_every=cfg.eval_every,
                on_checkpoint=on_checkpoint,
                desc=desc,
                log_every=max(1, cfg.eval_every // 4),
                param_groups=groups,
                **optimizer_args(cfg),
            )

    if cache_name is None:
        history = run()
    else:
        history = train.cached_training(
            "03",
            cache_name,
            cfg,
            models,
            run,
            uses=__name__,
            seeds=list(seeds),
            net="minimal",
            clamp={clamp: overrides},
            **({} if groups is None else {"scalar_optimizer": dict(scalar_optimizer)}),
        )
    return [
        Run(cfg=cfg, seed=s, task=t, sets=st, model=m, history=history.member(i))
        for i, (s, t, st, m) in enumerate(zip(seeds, tasks, sets, models))
    ]


def knock_out(att: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """Layer 1's attention map ``(n, T, T)`` (row: the attending token; label tokens at the odd
    positions 1, 3, ..., 2N - 1) with each label token's attention to the token ``offset`` places
    before it set to 0 and the row renormalised to sum to 1. ``offset=1`` knocks out the
    previous-token head (each label's attention to its own item); ``offset=2`` removes as many
    entries off the circuit (each label's attention to the label before it), the control. A row
    whose whole attention sat on the removed entry keeps its attention there (nothing to
    renormalise). Raises ``ValueError`` for a map that is not ``(n, T, T)`` or ``offset < 1``."""
    if att.ndim != 3 or att.shape[-1] != att.shape[-2]:
        raise ValueError(f"need a layer-1 map of shape (n, T, T), got {tuple(att.shape)}")
    if offset < 1:
        raise ValueError(f"offset must be >= 1 (a token before the label), got {offset}")
    T = att.shape[-1]
    rows = torch.arange(1, T - 1, 2, device=att.device)
    rows = rows[rows >= offset]
    keep = torch.ones_like(att)
    keep[:, rows, rows - offset] = 0.0
    out = att * keep
    total = out.sum(-1, keepdim=True)
    return torch.where(total > 0, out / total.clamp_min(torch.finfo(att.dtype).tiny), att)


@torch.no_grad()
def knocked_out_accuracy(model: InductionNet, seqs: Sequences, offset: int = 1) -> float:
    """Accuracy of ``model`` on ``seqs`` with layer 1's attention knocked out by
    :func:`knock_out` (``offset``) at every pass (``internals.overriding(model, att1=...)``)."""
    with internals.overriding(model, att1=lambda a: knock_out(a, offset)):
        return float((predict(model, seqs) == seqs.target).float().mean())
