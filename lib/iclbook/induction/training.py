"""Training chapter 3's networks through the shared loop and the trained-weight cache: one
batched ensemble of seeds or data configurations, each member measured at every checkpoint.

The only module of the package that calls :func:`iclbook.train.cached_training`. The cache key
hashes this module's source and that of the library modules it imports (data, model, and
measures, whose :func:`~iclbook.induction.measures.measure` the checkpoints record in the
history), and the config's *trained* fields by value; never the rules of
:mod:`iclbook.induction.analysis`.

What a training returns: a list of :class:`Run`, one per member, because each member carries
its own config, task and evaluation sets. Read as the other chapters read ``(models,
history)``: ``run.model`` is ``models[i]``, ``run.history`` is ``history.member(i)`` (one dict of
measures per checkpoint), ``run.steps`` is ``history.steps`` and ``run.series(key)`` is
``(history.steps, history.curve(key)[i])`` of the ensemble's :class:`iclbook.train.History`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from iclbook import runtime, train
from iclbook.induction.config import Config
from iclbook.induction.data import Sequences, Task, eval_sets, make_task, sample, sample_stacked
from iclbook.induction.measures import measure
from iclbook.induction.model import InductionNet, MinimalNet, cross_entropy


def optimizer_args(cfg: Config) -> dict:
    """``train.train`` keywords for ``cfg``'s optimiser and step (``cfg.optimizer``, ``cfg.lr``)
    with the author's update ``p <- (1 - decay) p - step``.

    Plain SGD (the paper) uses torch's coupled weight decay ``decay / lr``, which is exactly that
    update; Adam (the book's CPU calibration) uses AdamW with the same value, whose decoupled
    shrink is the same multiplicative ``(1 - decay)`` per step.
    """
    name = {"adam": "adamw", "sgd": "sgd"}[cfg.optimizer]
    return {"optimizer": name, "lr": cfg.lr, "weight_decay": cfg.decay / cfg.lr}


@dataclass
class Run:
    """One trained member: its config, task, evaluation sets, model and measured history."""

    cfg: Config
    seed: int
    task: Task
    sets: dict[str, Sequences]
    model: InductionNet | MinimalNet
    history: list[dict[str, float]]  # one dict of measures per checkpoint, with "step" (History.member)
    weights: list[dict[str, torch.Tensor]] | None = None  # state_dict per checkpoint (keep_weights)

    def at(self, index: int) -> InductionNet | MinimalNet:
        """A copy of the model with the weights of checkpoint ``index`` (needs ``keep_weights``)."""
        if self.weights is None:
            raise ValueError("this run kept no weights per checkpoint: train it with keep_weights=True")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.weights[index])
        return model

    @property
    def steps(self) -> np.ndarray:
        """``(checkpoints,)`` the checkpoint steps, as :attr:`iclbook.train.History.steps`."""
        return np.array([h["step"] for h in self.history])

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)``, two ``(checkpoints,)`` arrays, of the measure ``key``: this member's
        row of ``History.curve(key)`` with its steps, ready for :mod:`iclbook.curves`
        (``curves.transition(*run.series("IC"), B / N)``)."""
        return self.steps, np.array([h[key] for h in self.history])

    @property
    def final(self) -> dict[str, float]:
        """The measures of the last checkpoint."""
        return self.history[-1]


def grid_variants(cfg: Config) -> list[dict]:
    """``train_runs`` variants of the data-dependence grid (``p_C = 0`` throughout)."""
    return [{"K": K, "B": B, "p_B": p_B, "zipf": a, "eps": e, "p_C": 0.0} for K, B, p_B, a, e in cfg.grid]


def comparison_points(cfg: Config) -> dict[str, tuple[int, int, float, float]]:
    """The grid members the chapter compares, as ``(K, B, p_B, zipf)``: ``low_B``, ``high``
    (``K = compare_K[1]``, ``B = compare_B[1]``), ``low_K``, and ``mixed`` when configured."""
    K_lo, K_hi = cfg.compare_K
    B_lo, B_hi = cfg.compare_B
    points = {"low_B": (K_hi, B_lo, 1.0, 0.0), "high": (K_hi, B_hi, 1.0, 0.0), "low_K": (K_lo, B_hi, 1.0, 0.0)}
    if cfg.mixed is not None:
        points["mixed"] = tuple(cfg.mixed)
    return points


def grid_member(runs: Sequence[Run], point: tuple[int, int, float, float], *, missing_ok: bool = False) -> Run | None:
    """The run of the grid at ``point = (K, B, p_B, zipf)``. A grid that lacks it is a clear
    ``LookupError``, or ``None`` with ``missing_ok`` (a profile whose grid is too small to judge)."""
    hits = [r for r in runs if (r.cfg.K, r.cfg.B, r.cfg.p_B, r.cfg.zipf) == tuple(point)]
    if not hits:
        if missing_ok:
            return None
        have = sorted({(r.cfg.K, r.cfg.B, r.cfg.p_B, r.cfg.zipf) for r in runs})
        raise LookupError(
            f"the grid has no member (K, B, p_B, zipf) = {tuple(point)}; it has {have}: "
            "set compare_K / compare_B / mixed of the profile's Config to members of its grid"
        )
    return hits[0]


def train_runs(
    cfg: Config,
    seeds: list[int],
    variants: list[dict] | None = None,
    *,
    net: str = "full",
    scalar_optimizer: Mapping[str, Any] | None = None,
    measured: Sequence[str] | None = None,
    keep_weights: bool = False,
    cache_name: str | None = None,
    desc: str = "induction net",
    **changes: Any,
) -> list[Run]:
    """Train one network per (seed, data variant) as one batched ensemble, through the cache.

    Every member trains as ``cfg`` says: ``cfg.steps`` steps of ``cfg.optimizer`` at ``cfg.lr``
    (with the author's shrink ``cfg.decay``) on batches of ``cfg.batch``, measured every
    ``cfg.eval_every`` steps. ``changes`` replace fields of ``cfg`` for this training:
    ``train_runs(cfg, seeds, steps=300, lr=0.1)`` is ``train_runs(replace(cfg, steps=300,
    lr=0.1), seeds)``. ``variants`` override data fields per member (e.g. ``{"K": 512, "B": 4}``);
    each member draws its own task from its seed, so members are independent runs.

    ``net`` is ``"full"`` (:class:`InductionNet`) or ``"minimal"`` (:class:`MinimalNet`).
    ``scalar_optimizer`` (minimal model only), e.g. ``{"optimizer": "sgd", "lr": 0.3}``, trains
    the three scalars ``beta1, alpha, beta2`` with another optimizer than the classifier (no
    weight decay on them). ``measured`` names the evaluation sets measured at each checkpoint
    (default: all; ``("test",)`` for the loss and the classifier's activity only); it changes no
    training step. ``keep_weights`` keeps every member's weights at every checkpoint
    (``Run.weights``, ``Run.at``), cached with the final weights; it changes no training step
    either. ``cache_name`` trains through the weight cache (None: always train).
    """
    names = {f.name for f in fields(cfg)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"train_runs: {unknown} are not fields of the chapter's Config")
    cfg = replace(cfg, **changes)
    nets = {"full": InductionNet, "minimal": MinimalNet}
    if net not in nets:
        raise ValueError(f"net must be 'full' or 'minimal', got {net!r}")
    if scalar_optimizer is not None and net != "minimal":
        raise ValueError("scalar_optimizer is for the minimal model's scalars (net='minimal')")
    groups = (
        None
        if scalar_optimizer is None
        else {k: {"weight_decay": 0.0, **scalar_optimizer} for k in ("beta1", "alpha", "beta2")}
    )
    variants = variants or [{}] * len(seeds)
    if len(variants) != len(seeds):
        raise ValueError(f"need one variant per seed: {len(variants)} variants, {len(seeds)} seeds")
    steps, batch, eval_every = cfg.steps, cfg.batch, cfg.eval_every
    opt = optimizer_args(cfg)
    device = runtime.device()
    cfgs = [replace(cfg, **v) for v in variants]
    tasks = [make_task(c, runtime.stream("task", s)) for c, s in zip(cfgs, seeds)]
    sets = [
        {k: _to(v, device) for k, v in eval_sets(t, c, runtime.stream("eval-sets", s)).items()}
        for t, c, s in zip(tasks, cfgs, seeds)
    ]
    models = [nets[net](c, runtime.generator(s)).to(device) for c, s in zip(cfgs, seeds)]

    def sampler(task: Task, c: Config):
        def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            s = sample(task, batch, c, g)
            return s.tokens.to(device), s.target.to(device)

        return draw

    # members of one data config draw their batches at once (the same numbers, see sample_stacked)
    draw_all = None
    if len(models) > 1 and all(c == cfgs[0] for c in cfgs):

        def draw_stacked(gens: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
            s = sample_stacked(tasks, batch, cfgs[0], gens)
            return s.tokens.to(device), s.target.to(device)

        draw_all = train.Stacked(draw_stacked)

    snapshots: list[list[dict[str, torch.Tensor]]] = []  # per checkpoint, per member

    def on_checkpoint(step: int, members: list[nn.Module]) -> dict:
        if keep_weights:
            snapshots.append([{k: v.detach().clone() for k, v in m.state_dict().items()} for m in members])
        out = []
        for m, st in zip(members, sets):
            row = measure(m, st if measured is None else {k: st[k] for k in measured})
            if isinstance(m, MinimalNet):
                row.update({k: getattr(m, k).item() for k in ("beta1", "alpha", "beta2")})
            if isinstance(m, InductionNet) and (measured is None or "IC" in measured):  # maps, for figures
                with torch.no_grad():
                    a1, a2 = m.attention(st["IC"].tokens[:1])
                row["maps"] = {"att1": a1[0].round(decimals=4).tolist(), "att2": a2[0].round(decimals=4).tolist()}
            out.append(row)
        return {"members": out}

    def run() -> dict:
        return train.train(
            models,
            cross_entropy,
            draw_all if draw_all is not None else [sampler(t, c) for t, c in zip(tasks, cfgs)],
            steps=steps,
            generators=[runtime.stream("batches", s) for s in seeds],
            checkpoint_every=eval_every,
            on_checkpoint=on_checkpoint,
            desc=desc,
            log_every=max(1, eval_every // 4),
            param_groups=groups,
            **opt,
        )

    def kept() -> dict[str, torch.Tensor]:
        return {
            f"{c}/{i}/{k}": v for c, snap in enumerate(snapshots) for i, sd in enumerate(snap) for k, v in sd.items()
        }

    if cache_name is None:
        history = run()
        if keep_weights:
            history["extra_state"] = kept()
    else:
        # the schedule and the optimiser are fields of cfg, keyed with its other trained fields
        history = train.cached_training(
            "03",
            cache_name,
            cfg,
            models,
            run,
            uses=__name__,
            seeds=list(seeds),
            extra_state=kept if keep_weights else None,
            **({"keep_weights": True} if keep_weights else {}),
            variants=variants,
            net=net,
            **({} if groups is None else {"scalar_optimizer": dict(scalar_optimizer)}),
            **({} if measured is None else {"measured": list(measured)}),
        )
    runs = []
    for i, (c, s, t, st, m) in enumerate(zip(cfgs, seeds, tasks, sets, models)):
        hist = history.member(i)
        weights = None
        if keep_weights:
            kept_state = history["extra_state"]
            weights = [{k: kept_state[f"{cp}/{i}/{k}"] for k in m.state_dict()} for cp in range(len(hist))]
        runs.append(Run(cfg=c, seed=s, task=t, sets=st, model=m, history=hist, weights=weights))
    return runs


def _to(seqs: Sequences, device: torch.device) -> Sequences:
    return seqs.map(lambda t: t.to(device))
