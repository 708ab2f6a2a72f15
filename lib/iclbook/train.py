"""One training loop for every chapter: a progress bar, a history, checkpoint callbacks, and
batched ensembles.

An *ensemble* is a list of models of one architecture (several seeds, or several configs that
only differ in their initial weights). :func:`train` stacks their parameters along a leading
ensemble dimension with :mod:`torch.func` and trains them as one vectorised model: one Python
loop, one optimizer step, each member with its own data stream. Because the total loss is the
*sum* of the members' losses and Adam/SGD act elementwise, every member follows the same path it
would follow alone (up to float rounding; a test checks this).

Example::

    models = [make_model(seed=s) for s in seeds]
    history = train(models, loss_fn, sample_batch, steps=3000, lr=1e-3,
                    generators=[runtime.generator(s) for s in seeds])
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.std import tqdm

from iclbook import runtime

Batch = tuple[torch.Tensor, ...]


class History(dict):
    """What :func:`train` returns, and what every chapter reads its learning curves from.

    A plain dict underneath (JSON-able, so the weight cache stores it as it is) with the keys
    ``step`` (the logged steps), ``loss`` (one list of member losses per logged step),
    ``checkpoints`` (one dict per checkpoint: ``step``, and ``members``, one dict of measures per
    ensemble member, as ``on_checkpoint`` returns them), ``seconds`` and ``members``; and
    ``cached`` once it went through :func:`cached_training`. The accessors read it as arrays::

        history.steps              # (checkpoints,) the checkpoint steps
        history.curve("error")     # (members, checkpoints) one measure of every member
        history.member(0)          # member 0's checkpoints: [{"step": 0, "error": ...}, ...]
        history.loss_curve()       # (members, logged steps) the training loss
    """

    @property
    def steps(self) -> np.ndarray:
        return np.array([c["step"] for c in self.get("checkpoints", [])])

    def _members(self, c: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        if "members" not in c:
            raise KeyError(
                "this history's checkpoints have no per-member measures: its on_checkpoint "
                "must return {'members': [one dict per member]}"
            )
        return c["members"]

    def curve(self, key: str) -> np.ndarray:
        """``(members, checkpoints)`` array of the measure ``key``."""
        ck = self.get("checkpoints", [])
        if not ck:
            raise ValueError("this history has no checkpoints (train with checkpoint_every and on_checkpoint)")
        return np.array([[self._members(c)[m][key] for c in ck] for m in range(len(self._members(ck[0])))])

    def member(self, index: int) -> list[dict[str, Any]]:
        """The checkpoints of member ``index``: its measures with their ``step``."""
        return [dict(self._members(c)[index], step=c["step"]) for c in self.get("checkpoints", [])]

    def loss_curve(self) -> np.ndarray:
        """``(members, logged steps)`` training loss; the steps are ``history["step"]``."""
        return np.array(self["loss"]).T


LossFn = Callable[[Callable[..., torch.Tensor], Batch], torch.Tensor]


def make_optimizer(
    name: str, params: Sequence[torch.Tensor], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``"adam"``, ``"adamw"`` or ``"sgd"`` (plain), with ``torch.optim``'s weight decay.

    ``"sgd"`` with ``weight_decay = delta / lr`` and ``"adamw"`` with the same value both apply the
    per-step shrink ``p <- (1 - delta) p - update`` (the form chapter 3's author used)."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {name!r}")


class Stacked:
    """A sampler that draws the batches of every member of an ensemble at once: ``fn(generators)``
    returns one batch whose parts carry a first dimension of one row per member (see
    :func:`train`)."""

    def __init__(self, fn: Callable[[Sequence[torch.Generator]], Batch]):
        self.fn = fn

    def __call__(self, generators: Sequence[torch.Generator]) -> Batch:
        return self.fn(generators)


def train(
    models: nn.Module | Sequence[nn.Module],
    loss_fn: LossFn,
    sample_batch: Callable[[torch.Generator], Batch] | Sequence[Callable[[torch.Generator], Batch]] | Stacked,
    *,
    steps: int,
    lr: float,
    generators: torch.Generator | Sequence[torch.Generator],
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    schedule: str = "constant",
    log_every: int = 10,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[int, list[nn.Module]], dict[str, Any]] | None = None,
    desc: str = "train",
    param_groups: Mapping[str, Mapping[str, Any]] | None = None,
) -> History:
    """Train a model, or an ensemble of models as one batched model, in place.

    Parameters
    ----------
    models
        One ``nn.Module`` or a list of modules with the same parameter names and shapes.
    loss_fn
        ``loss_fn(model, batch) -> scalar``: ``model(*inputs)`` runs the forward pass of one member
        (inside an ensemble it is a functional call on that member's slice of the parameters).
    sample_batch
        ``sample_batch(generator) -> batch``: one member's batch, a tuple of tensors. Each member
        draws from its own generator, so members see independent data. A list of samplers, one
        per member, trains members on different data distributions (a sweep of configs).
        :class:`Stacked` wraps a function that draws every member's batch at once
        (``fn(generators) -> batch``, each part stacked along a first dimension of one row per
        member): the same numbers as one sampler per member when it draws each member's from that
        member's generator, with the per-member work done once.
    steps, lr, optimizer, weight_decay, schedule
        ``steps`` optimizer steps of ``optimizer`` (``"adam"``, ``"adamw"`` or ``"sgd"``) at learning rate
        ``lr``, held ``"constant"`` or decayed to zero along a half ``"cosine"``.
    generators
        One ``torch.Generator`` per member (a single one for a single model).
    log_every
        Record the loss of every member every ``log_every`` steps (and at the last step).
    param_groups
        Other optimizers for some parameters: ``{name: {"optimizer": ..., "lr": ...,
        "weight_decay": ...}}``, where ``name`` is a parameter's name or a module prefix (``"mlp"``
        covers ``"mlp.0.weight"``...); missing keys default to the main optimizer's. The rest of
        the parameters use ``optimizer``, ``lr``, ``weight_decay``. (Chapter 3 trains the minimal
        model's scalars with plain SGD and its classifier with AdamW.)
    checkpoint_every, on_checkpoint
        Call ``on_checkpoint(step, members)`` before training, every ``checkpoint_every`` steps and
        after the last step, with the members' current weights written back into ``models``; the
        returned dict of JSON-able values is stored in ``history["checkpoints"]``.

    Returns
    -------
    history : History
        ``step`` (logged steps), ``loss`` (one list of member losses per logged step),
        ``checkpoints`` (list of dicts with ``step``), ``seconds`` (wall time), ``members``.
    """
    members = [models] if isinstance(models, nn.Module) else list(models)
    gens = [generators] if isinstance(generators, torch.Generator) else list(generators)
    if not members:
        raise ValueError("need at least one model")
    if len(gens) != len(members):
        raise ValueError(f"need one generator per model: {len(gens)} generators, {len(members)} models")
    if isinstance(sample_batch, Stacked):
        samplers = [sample_batch] * len(members)
    else:
        samplers = list(sample_batch) if isinstance(sample_batch, (list, tuple)) else [sample_batch] * len(members)
    if len(samplers) != len(members):
        raise ValueError(f"need one sampler per model: {len(samplers)} samplers, {len(members)} models")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if log_every < 1 or (checkpoint_every is not None and checkpoint_every < 1):
        raise ValueError("log_every and checkpoint_every must be >= 1")
    names = [[n for n, _ in m.named_parameters()] for m in members]
    if any(n != names[0] for n in names):
        raise ValueError("ensemble members must share parameter names (one architecture)")

    single = len(members) == 1
    stacked_draw = isinstance(sample_batch, Stacked)
    if single:
        named = [(n, p) for n, p in members[0].named_parameters() if p.requires_grad]

        def batched_loss(batches: list[Batch] | Batch) -> torch.Tensor:
            batch = tuple(part[0] for part in batches) if stacked_draw else batches[0]
            return loss_fn(members[0], batch).reshape(1)

        def write_back() -> None:
            pass

    else:
        stacked, buffers = stack_module_state(members)
        base = copy.deepcopy(members[0]).to("meta")
        named = list(stacked.items())

        def member_loss(p: dict, b: dict, batch: Batch) -> torch.Tensor:
            return loss_fn(lambda *a, **k: functional_call(base, (p, b), a, k), batch)

        vmapped = vmap(member_loss)

        def batched_loss(batches: list[Batch] | Batch) -> torch.Tensor:
            batch = batches if stacked_draw else tuple(torch.stack(parts) for parts in zip(*batches))
            return vmapped(stacked, buffers, batch)

        @torch.no_grad()
        def write_back() -> None:
            for i, member in enumerate(members):
                for name, p in member.named_parameters():
                    p.copy_(stacked[name][i])

    opts = _optimizers(named, optimizer, lr, weight_decay, param_groups or {})
    if schedule == "cosine":
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(steps, 1)) for o in opts]
    elif schedule == "constant":
        schedulers = []
    else:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    history = History(step=[], loss=[], checkpoints=[], members=len(members))

    def checkpoint(step: int) -> None:
        if on_checkpoint is None:
            return
        write_back()
        metrics = dict(on_checkpoint(step, members))
        metrics["step"] = step
        history["checkpoints"].append(metrics)

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
        losses = batched_loss(sample_batch(gens) if stacked_draw else [sample(g) for sample, g in zip(samplers, gens)])
        for o in opts:
            o.zero_grad(set_to_none=True)
        losses.sum().backward()
        for o in opts:
            o.step()
        for sch in schedulers:
            sch.step()
        if step % log_every == 0 or step == steps:
            # the losses are read (and checked) only here: on a GPU, reading a value waits for the
            # device, so a check at every step would stall it at every step
            values = _values(losses)
            if not all(math.isfinite(v) for v in values):
                write_back()
                raise FloatingPointError(
                    f"non-finite loss by step {step} (checked every log_every={log_every} steps): {values}"
                )
            history["step"].append(step)
            history["loss"].append(values)
            bar.set_postfix(loss=f"{sum(values) / len(values):.4g}", refresh=False)
        if checkpoint_every is not None and (step % checkpoint_every == 0 or step == steps):
            if not history["checkpoints"] or history["checkpoints"][-1]["step"] != step:
                checkpoint(step)
    bar.close()
    write_back()
    history["seconds"] = time.perf_counter() - start
    return history


def _values(losses: torch.Tensor) -> list[float]:
    """The members' losses as floats. A tensor on PyTorch's ``meta`` device has a shape and no
    values (the device-hygiene tests, tests/test_devices.py, train on it): it reads as zeros."""
    if losses.device.type == "meta":
        return [0.0] * losses.numel()
    return losses.detach().tolist()


def _optimizers(
    named: Sequence[tuple[str, torch.Tensor]],
    optimizer: str,
    lr: float,
    weight_decay: float,
    groups: Mapping[str, Mapping[str, Any]],
) -> list[torch.optim.Optimizer]:
    """One optimizer for the parameters no group claims, and one per group of ``groups``."""
    for key, spec in groups.items():
        unknown = set(spec) - {"optimizer", "lr", "weight_decay"}
        if unknown:
            raise ValueError(f"param_groups[{key!r}]: unknown keys {sorted(unknown)}")
    claimed: dict[str, list[torch.Tensor]] = {key: [] for key in groups}
    rest = []
    for name, p in named:
        owner = [k for k in groups if name == k or name.startswith(k + ".")]
        if len(owner) > 1:
            raise ValueError(f"parameter {name!r} is in several param_groups: {owner}")
        (claimed[owner[0]] if owner else rest).append(p)
    empty = [k for k, ps in claimed.items() if not ps]
    if empty:
        raise ValueError(f"param_groups {empty} match no parameter; names are {[n for n, _ in named]}")
    opts = [make_optimizer(optimizer, rest, lr, weight_decay)] if rest else []
    for key, spec in groups.items():
        opts.append(
            make_optimizer(
                spec.get("optimizer", optimizer),
                claimed[key],
                spec.get("lr", lr),
                spec.get("weight_decay", weight_decay),
            )
        )
    return opts


def stack_states(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The members' ``state_dict``s under keys ``"<member>.<name>"``, ready for the weight cache."""
    return {f"{i}.{k}": v for i, m in enumerate(models) for k, v in m.state_dict().items()}


def load_stacked(models: Sequence[nn.Module], state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`stack_states`: load each member's weights in place."""
    for i, m in enumerate(models):
        prefix = f"{i}."
        m.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def cached_training(
    chapter: str,
    name: str,
    config: Any,
    models: Sequence[nn.Module],
    run: Callable[[], History],
    *,
    extra_state: Callable[[], dict[str, torch.Tensor]] | None = None,
    uses: str | None = None,
    **extra: Any,
) -> History:
    """Train ``models`` through the trained-weight cache (:func:`iclbook.runtime.cached`).

    ``run()`` trains the models in place and returns the history. On a cache hit it is not
    called: the members' weights and the stored history are loaded instead. ``extra`` joins the
    cache key (seeds, steps...); ``uses`` names the module that trains (pass ``__name__``), whose
    source, and that of what it imports, keys the entry. The returned history has ``cached`` set to whether it hit.
    ``extra_state()``, called after training, returns more tensors to keep with the weights
    (e.g. snapshots at checkpoints); they come back, stored or loaded, as
    ``history["extra_state"]``.
    """

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        history = run()
        state = stack_states(models)
        if extra_state is not None:
            state.update({f"extra:{k}": v for k, v in extra_state().items()})
        return state, history

    state, history, hit = runtime.cached(chapter, name, config, build, uses=uses, **extra)
    history = History(history)
    if hit:
        load_stacked(models, state)  # reads the "<member>." keys only
    history["cached"] = hit
    if extra_state is not None:
        history["extra_state"] = {k[len("extra:") :]: v for k, v in state.items() if k.startswith("extra:")}
    return history
