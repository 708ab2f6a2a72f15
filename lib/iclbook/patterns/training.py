"""Training chapter 1's models through the shared loop and the trained-weight cache: the one-layer
model by plain SGD on the hinge loss (one batched ensemble per call), the multi-layer model by
Adam, and what is measured at the checkpoints of a run.

The weight cache's key hashes this module's source and that of the library modules it imports.
It imports :mod:`iclbook.patterns.measures` because the training histories stored with the
weights hold measurements (:func:`progress_checkpoints`, :func:`error_checkpoints`): an edit
there changes what a cached history would contain, so it retrains.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.std import tqdm

from iclbook import runtime, train
from iclbook.patterns.config import Config
from iclbook.patterns.data import Domain, Prompts, in_domain, sample_prompts, sample_stacked
from iclbook.patterns.measures import progress_measures, stacked_errors
from iclbook.patterns.model import PARAMS, OneLayerICL, SmallGPT, hinge, stacked_margins

Checkpoint = Callable[[int, list], dict]


def progress_checkpoints(cfg: Config, id_val: Prompts, ood_val: Prompts, ood_domain: Domain) -> Checkpoint:
    """An ``on_checkpoint`` for :func:`train_models`: every member's
    :func:`~iclbook.patterns.measures.progress_measures` on ``id_val`` and ``ood_val``, under
    ``"members"``."""

    def measure(step: int, members: list) -> dict:
        return {"members": [progress_measures(m, cfg, id_val, ood_val, ood_domain) for m in members]}

    return measure


def error_checkpoints(prompts: Sequence[Prompts]) -> Checkpoint:
    """An ``on_checkpoint`` for :func:`train_models`: member ``i``'s error on ``prompts[i]``
    (``{"members": [{"error": ...}, ...]}``)."""

    groups: dict[int, list[int]] = {}  # members that read the same prompts are evaluated as one stack
    for i, p in enumerate(prompts):
        groups.setdefault(id(p), []).append(i)

    def measure(step: int, members: list, index: list[int] | None = None) -> dict:
        """Member ``j`` of ``members`` is the ensemble's member ``index[j]`` (all of them in order by default)."""
        index = list(range(len(members))) if index is None else list(index)
        position = {e: j for j, e in enumerate(index)}
        errors = [0.0] * len(members)
        for idx in groups.values():
            here = [e for e in idx if e in position]
            if here:
                for e, err in zip(here, stacked_errors([members[position[e]] for e in here], prompts[here[0]])):
                    errors[position[e]] = err
        return {"members": [{"error": e} for e in errors]}

    return measure


def train_stacked(
    models: Sequence[OneLayerICL],
    cfg: Config,
    seeds: Sequence[int],
    alphas: Sequence[float],
    *,
    steps: int,
    lr: float | Sequence[float],
    l: int | Sequence[int] | None = None,
    on_checkpoint: Checkpoint | None = None,
    checkpoint_every: int | None = None,
    budgets: Sequence[int] | None = None,
    settle: tuple[Sequence[float], int] | None = None,
    log_every: int = 10,
    desc: str = "one-layer ICL",
) -> train.History:
    """Plain SGD on the hinge loss for an ensemble of :class:`OneLayerICL` (one per seed), as
    :func:`iclbook.train.train` runs it (member ``e`` draws its batches from
    ``runtime.stream("batches", seeds[e])`` at ``alphas[e]``), but with the members' weights
    stacked by hand: one batched forward and backward pass per step and one assembly of every
    member's batch (:func:`~iclbook.patterns.data.sample_stacked`), instead of a ``vmap`` over the
    members and one sampler call each. Returns a :class:`iclbook.train.History` of the same
    layout; the models hold the trained weights.

    ``lr`` is one rate or one per member; ``l`` one training length or one per member (default
    ``cfg.l_train``; members of one length are one stacked pass). ``budgets`` gives each member its
    own number of steps (at most ``steps``). ``settle = (thresholds, patience)`` stops a member once
    its checkpoint ``"error"`` has stayed at or below ``thresholds[e]`` for ``patience`` steps: a
    stopped member draws no more batches and is not measured again, and its last measures (and
    loss) are repeated at the later checkpoints, as if its error stayed where it settled. A member
    that stops or runs out of budget leaves the others' numbers unchanged (to the bit: a test
    checks it), and the loop ends when no member is left.
    ``on_checkpoint(step, members, index)`` may take the members' positions ``index`` (an
    ``on_checkpoint`` of two arguments is called with every member)."""
    E = len(models)
    if not (E == len(seeds) == len(alphas)):
        raise ValueError(f"need one seed and one alpha per model: {E}, {len(seeds)}, {len(alphas)}")
    lengths = [cfg.l_train] * E if l is None else ([l] * E if isinstance(l, int) else list(l))
    rates = [float(lr)] * E if isinstance(lr, (int, float)) else [float(x) for x in lr]
    budget = [steps] * E if budgets is None else [min(int(b), steps) for b in budgets]
    if len(lengths) != E or min(lengths) < 1:
        raise ValueError(f"need one training length >= 1 per model, got {lengths}")
    if len(rates) != E or min(rates) <= 0 or len(budget) != E or min(budget) < 0:
        raise ValueError("need one learning rate > 0 and one step budget >= 0 per model")
    if settle is not None and (
        len(settle[0]) != E or settle[1] < 0 or on_checkpoint is None or checkpoint_every is None
    ):
        raise ValueError("settle needs one threshold per model, a patience >= 0 and checkpoints that measure 'error'")
    domain = in_domain(cfg, "train")
    W = {n: torch.stack([getattr(m, n).detach() for m in models]).clone().requires_grad_(True) for n in PARAMS}
    a = models[0].a
    gens = [runtime.stream("batches", s) for s in seeds]
    history = train.History(step=[], loss=[], checkpoints=[], members=E)
    active = [budget[i] > 0 for i in range(E)]
    below_since: list[int | None] = [None] * E
    last: list[dict] = [{} for _ in range(E)]
    last_loss = [0.0] * E  # a member's latest batch loss (repeated once it stopped)
    takes_index = (
        on_checkpoint is not None and on_checkpoint.__code__.co_argcount >= 3
        if hasattr(on_checkpoint, "__code__")
        else False
    )

    @torch.no_grad()
    def write_back() -> None:
        for i, m in enumerate(models):
            for n in PARAMS:
                getattr(m, n).copy_(W[n][i])

    def checkpoint(step: int) -> None:
        if on_checkpoint is None:
            return
        write_back()
        index = [i for i in range(E) if active[i] or step == 0] if settle is not None else list(range(E))
        if takes_index:
            measured = on_checkpoint(step, [models[i] for i in index], index)
        else:
            measured = on_checkpoint(step, list(models))
            index = list(range(E))
        if "members" not in measured:  # measures of the whole ensemble: stored as they are
            history["checkpoints"].append(dict(measured, step=step))
            return
        for i, values in zip(index, measured["members"]):
            last[i] = values
        history["checkpoints"].append({"members": [dict(v) for v in last], "step": step})
        if settle is not None:
            for i in index:
                if last[i]["error"] <= settle[0][i]:
                    below_since[i] = step if below_since[i] is None else below_since[i]
                    if step - below_since[i] >= settle[1]:
                        active[i] = False
                else:
                    below_since[i] = None

    def log(step: int) -> None:
        values = list(last_loss)
        if not all(math.isfinite(v) for v in values):
            write_back()
            raise FloatingPointError(f"non-finite loss by step {step}: {values}")
        history["step"].append(step)
        history["loss"].append(values)

    start = time.perf_counter()
    if checkpoint_every is not None:
        checkpoint(0)
    bar = tqdm(
        range(1, steps + 1),
        desc=desc,
        file=sys.stderr,
        mininterval=0.5,
        disable=not runtime.progress_enabled(),
        leave=False,
    )
    for step in bar:
        for i in range(E):
            active[i] = active[i] and step <= budget[i]
        if not any(active):
            break
        for v in sorted(set(lengths)):
            group = [i for i in range(E) if lengths[i] == v and active[i]]
            if not group:
                continue
            batch = sample_stacked(
                domain,
                cfg.batch,
                alphas=[alphas[i] for i in group],
                l=v,
                cfg=cfg,
                generators=[gens[i] for i in group],
            )
            Wg = W if len(group) == E else {n: w[group] for n, w in W.items()}
            F = stacked_margins(Wg, a, batch.tokens)
            group_loss = torch.clamp(1 - batch.target * F, min=0).mean(-1)
            group_loss.sum().backward()
            for i, x in zip(group, group_loss.detach().tolist()):
                last_loss[i] = x
        with torch.no_grad():
            for w in W.values():
                if len(set(rates)) == 1:
                    w.add_(w.grad, alpha=-rates[0])
                else:
                    for rate in sorted(set(rates)):
                        rows = [i for i in range(E) if rates[i] == rate]
                        w[rows] = w[rows].add(w.grad[rows], alpha=-rate)
                w.grad = None
        if step % log_every == 0 or step == steps:
            log(step)
        if checkpoint_every is not None and (step % checkpoint_every == 0 or step == steps):
            checkpoint(step)
    else:
        step = steps + 1
    # every member stopped early: the later log and checkpoint entries repeat where each settled
    for rest in range(step, steps + 1):
        if rest % log_every == 0 or rest == steps:
            log(rest)
        if (
            checkpoint_every is not None
            and on_checkpoint is not None
            and (rest % checkpoint_every == 0 or rest == steps)
        ):
            history["checkpoints"].append({"members": [dict(v) for v in last], "step": rest})
    bar.close()
    write_back()
    history["seconds"] = time.perf_counter() - start
    return history


def train_models(
    cfg: Config,
    seeds: list[int],
    alphas: list[float] | None = None,
    *,
    steps: int,
    lengths: list[int] | None = None,
    lrs: list[float] | None = None,
    budgets: list[int] | None = None,
    settle: tuple[list[float], int] | None = None,
    on_checkpoint: Checkpoint | None = None,
    cache_name: str | None = None,
    desc: str = "one-layer ICL",
) -> tuple[list[OneLayerICL], dict]:
    """Train one model per (seed, alpha) on the training tasks for ``steps`` SGD steps at
    ``cfg.lr``, as one batched ensemble (:func:`train_stacked`: the same weights, to the bit, as
    :func:`iclbook.train.train` gives the same members).

    ``alphas`` gives each member its training alpha (default ``cfg.alpha`` for all), ``lengths``
    its training context length (default ``cfg.l_train`` for all), ``lrs`` its rate (default
    ``cfg.lr``), ``budgets`` its number of steps (default ``steps``); ``settle`` stops members
    whose error has settled (:func:`train_stacked`).
    ``on_checkpoint(step, members) -> dict`` is called every ``cfg.checkpoint_every`` steps.
    With ``cache_name``, weights and history go through the weight cache under that name (the
    name must change whenever ``on_checkpoint`` computes something else).
    """
    alphas = alphas or [cfg.alpha] * len(seeds)
    if len(alphas) != len(seeds):
        raise ValueError("need one alpha per seed")
    lengths = list(lengths) if lengths is not None else [cfg.l_train] * len(seeds)
    if len(lengths) != len(seeds):
        raise ValueError("need one training length per seed")
    models = [OneLayerICL(cfg, seed=s) for s in seeds]

    def run() -> dict:
        return train_stacked(
            models,
            cfg,
            seeds,
            alphas,
            steps=steps,
            lr=cfg.lr if lrs is None else lrs,
            l=lengths,
            on_checkpoint=on_checkpoint,
            checkpoint_every=cfg.checkpoint_every if on_checkpoint is not None else None,
            budgets=budgets,
            settle=settle,
            desc=desc,
        )

    if cache_name is None:
        history = run()
        history["cached"] = False
        return models, history
    key = {"lengths": lengths} if any(li != cfg.l_train for li in lengths) else {}
    key.update({k: v for k, v in (("lrs", lrs), ("budgets", budgets), ("settle", settle)) if v is not None})
    history = train.cached_training(
        "01", cache_name, cfg, models, run, uses=__name__, seeds=list(seeds), alphas=list(alphas), steps=steps, **key
    )
    return models, history


def train_gpt(
    cfg: Config, seeds: list[int], *, lr: float = 1e-3, desc: str = "multi-layer"
) -> tuple[list[SmallGPT], dict]:
    """Train :class:`SmallGPT` models (``cfg.gpt_layers`` layers, ``cfg.gpt_heads`` heads, width
    ``cfg.gpt_width``; one per seed, as one ensemble) for ``cfg.gpt_steps`` Adam steps on hinge
    loss with a cosine learning-rate decay, on the same training tasks and prompts as the
    one-layer model; cached. (At a constant rate, Adam on the hinge loss keeps jumping once most
    margins are met: the rare violators' gradients are rescaled to full size.)"""
    domain = in_domain(cfg, "train")
    models = [SmallGPT(cfg, seed=s) for s in seeds]

    def sample(g):
        return sample_prompts(domain, cfg.batch, alpha=cfg.alpha, l=cfg.l_train, cfg=cfg, generator=g).batch()

    def run() -> dict:
        return train.train(
            models,
            hinge,
            sample,
            steps=cfg.gpt_steps,
            lr=lr,
            optimizer="adam",
            schedule="cosine",
            generators=[runtime.stream("gpt-batches", s) for s in seeds],
            desc=desc,
        )

    history = train.cached_training(
        "01", "gpt", cfg, models, run, uses=__name__, seeds=list(seeds), steps=cfg.gpt_steps, lr=lr
    )
    return models, history
