"""Training chapter 1's models through the shared loop and the trained-weight cache: the one-layer
model by plain SGD on the hinge loss (one batched ensemble per call), the multi-layer model by
Adam, and what is measured at the checkpoints of a run.

The weight cache's key hashes this module's source and that of the library modules it imports.
It imports :mod:`iclbook.patterns.measures` because the training histories stored with the
weights hold measurements (:func:`progress_checkpoints`, :func:`error_checkpoints`): an edit
there changes what a cached history would contain, so it retrains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from iclbook import runtime, train
from iclbook.patterns.config import Config
from iclbook.patterns.data import Domain, Prompts, in_domain, sample_prompts
from iclbook.patterns.measures import error, progress_measures
from iclbook.patterns.model import OneLayerICL, SmallGPT, hinge

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

    def measure(step: int, members: list) -> dict:
        return {"members": [{"error": error(m, p)} for m, p in zip(members, prompts)]}

    return measure


def train_models(
    cfg: Config,
    seeds: list[int],
    alphas: list[float] | None = None,
    *,
    steps: int,
    on_checkpoint: Checkpoint | None = None,
    cache_name: str | None = None,
    desc: str = "one-layer ICL",
) -> tuple[list[OneLayerICL], dict]:
    """Train one model per (seed, alpha) on the training tasks for ``steps`` SGD steps at
    ``cfg.lr``, as one batched ensemble.

    ``alphas`` gives each member its training alpha (default ``cfg.alpha`` for all).
    ``on_checkpoint(step, members) -> dict`` is called every ``cfg.checkpoint_every`` steps.
    With ``cache_name``, weights and history go through the weight cache under that name (the
    name must change whenever ``on_checkpoint`` computes something else).
    """
    alphas = alphas or [cfg.alpha] * len(seeds)
    if len(alphas) != len(seeds):
        raise ValueError("need one alpha per seed")
    domain = in_domain(cfg, "train")
    models = [OneLayerICL(cfg, seed=s) for s in seeds]

    def sampler(alpha: float):
        return lambda g: sample_prompts(domain, cfg.batch, alpha=alpha, l=cfg.l_train, cfg=cfg, generator=g).batch()

    def run() -> dict:
        return train.train(
            models,
            hinge,
            [sampler(a) for a in alphas],
            steps=steps,
            lr=cfg.lr,
            optimizer="sgd",
            generators=[runtime.stream("batches", s) for s in seeds],
            checkpoint_every=cfg.checkpoint_every if on_checkpoint is not None else None,
            on_checkpoint=on_checkpoint,
            desc=desc,
        )

    if cache_name is None:
        history = run()
        history["cached"] = False
        return models, history
    history = train.cached_training(
        "01", cache_name, cfg, models, run, uses=__name__, seeds=list(seeds), alphas=list(alphas), steps=steps
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
