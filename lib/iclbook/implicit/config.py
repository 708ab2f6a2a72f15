"""Chapter 2's sizes, one :class:`Config` per profile (``CONFIGS[profile]``), and its named random
streams.

What is trained and what is checked. The chapter trains no weight of its own: the tiny GPT was
pretrained once, with the recipe of :class:`.pretrain.PretrainConfig` on the network of
:class:`.model.LMConfig` (the *trained* part), and ships with the library; nothing of chapter 2
goes through the weight cache. Every field below is read after that training, by the protocol
and the checks run on the frozen shipped weights: evaluation sizes, the demonstration seeds and
the learning-rate grid that the K/V finetuning tries, the thresholds of the ledger rows. So every
one is declared with :func:`iclbook.runtime.check`, and ``runtime.trained_part(cfg)`` is empty:
changing any of them retrains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from iclbook import runtime
from iclbook.implicit.data import TASK_NAMES

#: The paper's learning-rate grid: {1, ..., 9} x {1e-1, ..., 1e-4}.
LR_GRID = tuple(round(m * 10.0**e, 10) for e in (-1, -2, -3, -4) for m in range(1, 10))


@dataclass(frozen=True)
class Config:
    """Sizes of the chapter per profile, and its profile-dependent thresholds (all check fields)."""

    n_test: int = runtime.check(500)  # test examples per task and evaluation seed
    n_dev: int = runtime.check(200)  # dev examples (choice of demonstration seed and learning rate)
    k: int = runtime.check(16)  # demonstrations per prompt (= finetuning examples)
    pool: int = runtime.check(64)  # training examples the demonstrations are drawn from
    demo_seeds: tuple[int, ...] = runtime.check(tuple(range(1, 8)))  # demonstration draws tried on dev
    lr_grid: tuple[float, ...] = runtime.check(LR_GRID)  # finetuning rates tried on the frozen model
    eval_seeds: int = runtime.check(3)  # evaluation seeds for the accuracy table (s, s+1, ...)
    kendall_examples: int = runtime.check(100)
    control_examples: int = runtime.check(200)  # test examples per control run (the critics' controls)
    permutations: int = runtime.check(5)
    # evaluation seeds of the k = 2 runs (off the ceiling), of which every task runs the first
    # short_screen; a task none of whose screened runs is off its ceiling with a finetuning that
    # changed predictions runs no further (experiment.off_ceiling_runs)
    short_seeds: int = runtime.check(10)
    short_screen: int = runtime.check(3)
    names: tuple[str, ...] = runtime.check(TASK_NAMES)
    # Thresholds and sizes that the smoke profile relaxes to fit its budget:
    margin: float = runtime.check(0.15)  # points above chance (or ZSL) that count as beating it
    min_nonce: int = runtime.check(4)  # tasks where nonce-label ICL must beat chance + margin (sanity)
    lexicon_tasks: int = runtime.check(5)  # lexicon tasks of the regime section (all five: no CB)
    momentum_tasks: int = runtime.check(len(TASK_NAMES))  # tasks of the momentum study's ICL accuracy
    momentum_episodes: int = runtime.check(256)  # held-out pretraining episodes of its perplexities
    inference_tasks: int = runtime.check(len(TASK_NAMES))  # tasks the second model runs (sec-ch2-inference)
    # Whether the evaluation is large enough to judge the claims and controls (chapter.Chapter.judged):
    # where it is not, their rows are recorded inconclusive, with the reason.
    judged: bool = runtime.check(True)


CONFIGS = {
    "smoke": Config(
        n_test=60,
        n_dev=40,
        demo_seeds=(1, 2),
        lr_grid=LR_GRID[::4],
        eval_seeds=1,
        kendall_examples=30,
        control_examples=40,
        permutations=3,
        short_seeds=1,
        short_screen=1,
        margin=0.05,
        min_nonce=2,
        lexicon_tasks=2,
        momentum_tasks=1,
        momentum_episodes=32,
        inference_tasks=2,
        judged=False,
    ),
    "book": Config(n_test=500, n_dev=200),
    "paper": Config(n_test=2000, n_dev=500, eval_seeds=5, control_examples=500),
}


#: Chapter 2's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed. Several cells start a fresh generator at the chapter's seed itself (offset 0), as the
#: chapter always has: each draws different objects, so sharing the seed couples nothing they
#: compare. The tasks' examples come from the library stream "task-split" of each evaluation seed.
STREAMS = {
    "dual-form": runtime.Stream(),  # the random matrices of the exact dual-form check
    "example": runtime.Stream(),  # the pretraining sequence printed as an example
    "statistics": runtime.Stream(),  # the random baselines of SimAOU and Kendall
    "momentum-demos": runtime.Stream(),  # the demonstrations of the momentum study's ICL accuracy
    "eval": runtime.Stream(width=100),  # the evaluation seeds: demonstrations, dev and test examples
    "untrained-init": runtime.Stream(width=2),  # the untrained models of the critics' controls (0) and their null (1)
    "bootstrap": runtime.Stream(),  # the bootstrap intervals of the statistics
    "controls": runtime.Stream(),  # the shuffled-label and permutation controls
    "held-out": runtime.Stream(),  # held-out pretraining text of the momentum study
    "held-out-kinds": runtime.Stream(),  # held-out rows of each kind, the second momentum study
    "inference-statistics": runtime.Stream(),  # the second model's statistics and their intervals
    "inference-untrained": runtime.Stream(width=2),  # random models of the second model's shape
}
