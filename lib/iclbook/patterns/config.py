"""Chapter 1's sizes, one :class:`Config` per profile (``CONFIGS[profile]``), and its named random
streams (:data:`STREAMS`).

A field declared with :func:`iclbook.runtime.check` is read only after training (a number of test
prompts, a switch of a check): it stays out of the trained-weight cache's key, so changing it
retrains nothing. Every other field keys the weights, or the training histories stored with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from iclbook import runtime


@dataclass(frozen=True)
class Config:
    """Every size of chapter 1, per profile. Values marked (rec.) are the spec's calibrated CPU
    configuration, not the paper's (which it does not report); see the chapter's notes."""

    M1: int = 6  # IDR patterns (paper's experiments, per third-party notes)
    M2: int = 24  # IDI patterns
    d_Y: int = 4  # label-embedding size (rec.)
    beta: float = 1.0  # norm of the relevant patterns
    kappa: float = 0.5  # the bound K of the noise coefficient: kappa ~ U(-K, K) (reconstructed)
    alpha: float = 0.8  # fraction of contexts carrying the task's patterns (training)
    l_train: int = 20  # training context length
    m: int = 64  # MLP neurons (rec.)
    init_attn: float = 0.1  # W_Q = W_K = W_V = init_attn * I at initialisation (rec.)
    init_out: float = 0.05  # W_O ~ N(0, init_out^2) (rec.)
    lr: float = 5.0  # plain SGD (rec.)
    batch: int = 64
    steps: int = 1500
    checkpoint_every: int = 25
    n_test: int = runtime.check(4000)  # test prompts per evaluation point (after training)
    n_ood_relevant: int = 3  # M1' (the main run's checkpoints read an OOD domain: trained)
    train_split: str = "balanced"  # "balanced" (every pattern + and - equally often) or "uneven"
    n_ood_irrelevant: int = 8
    seeds: int = 4  # seeds of the main run
    sweep_seeds: int = 8  # seeds per alpha and protocol in the sample-complexity sweep (one ensemble)
    sweep_steps: int = 2500
    # the sweep's second protocol: the context length scaled with 1/alpha so that a prompt holds
    # this many contexts of the query's pattern on average at every alpha (l = 20, 13, 10, 8)
    sweep_matches: float = 4.0
    sweep_scaled_seeds: int = 6  # seeds per alpha of that second protocol (the first of sweep_seeds)
    # a sweep run stops once its error has stayed within the oracle's + 1% for this many steps
    # (its later checkpoints repeat its last error): the time it measures is unchanged unless the
    # run climbs back out later (none of the 20 full-length runs of the earlier sweep did)
    sweep_settle: int = 250
    sweep_alphas: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)  # training alphas of the sweep
    # retrain the sweep's extremes at half the step (off at smoke: time); a switch, no weight
    # depends on its value (the half-step runs have their own cache entry)
    lr_control: bool = runtime.check(True)
    # train four seeds on 6 of the 30 tasks, below Theorem 1's task fraction (off at smoke: time)
    task_control: bool = runtime.check(True)
    n_baseline: int = runtime.check(300)  # prompts per point of the classical baselines
    gpt_steps: int = 1000  # multi-layer check
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_width: int = 64
    # whether the multi-layer model's trend claims are judged at this profile (False at smoke: a
    # smaller, shorter run; its rows are recorded inconclusive with the reason, ch.unjudged)
    gpt_judged: bool = runtime.check(True)

    @property
    def d_X(self) -> int:
        return self.M1 + self.M2

    @property
    def d(self) -> int:
        return self.d_X + self.d_Y


CONFIGS: dict[str, Config] = {
    "smoke": Config(
        steps=1100,
        n_test=1000,
        seeds=2,
        sweep_seeds=2,
        sweep_scaled_seeds=2,
        sweep_steps=2000,
        sweep_alphas=(0.4, 1.0),
        n_baseline=40,
        lr_control=False,
        task_control=False,
        gpt_steps=300,
        gpt_width=32,
        gpt_judged=False,
    ),
    "book": Config(),
    "paper": Config(
        steps=4000,
        n_test=20000,
        seeds=5,
        sweep_seeds=16,
        sweep_scaled_seeds=16,
        sweep_steps=3000,
        n_baseline=1000,
        gpt_steps=20000,
        gpt_layers=3,
        gpt_heads=2,
        gpt_width=128,
    ),
}


#: Chapter 1's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed: what each draw is for. Several cells reuse one stream on purpose: the out-of-domain
#: sweeps share their domain ("ood-sweep-domain") so their numbers are comparable.
STREAMS = {
    "prompt-figure": runtime.Stream(),  # the one prompt drawn in the data figure
    "untrained-init": runtime.Stream(),  # the untrained model of the context-length check
    "bootstrap": runtime.Stream(kind="numpy", width=2),  # resampling seeds for the slopes' intervals (one per protocol)
    "ood-domain": runtime.Stream(),  # the out-of-domain patterns the progress measures use
    "id-val": runtime.Stream(),  # in-domain prompts read at every checkpoint
    "ood-val": runtime.Stream(),  # out-of-domain prompts read at every checkpoint
    "id-test": runtime.Stream(),  # Theorem 1's test prompts
    "ood-sweep-domain": runtime.Stream(),  # the domain of the S1, length, baseline and GPT checks
    "ood-sweep-prompts": runtime.Stream(),  # prompts of the S1 sweep
    "length-prompts": runtime.Stream(),  # prompts of the context-length sweep
    "alpha-sweep-prompts": runtime.Stream(),  # validation prompts of the alpha sweep
    "prune-domain": runtime.Stream(),
    "prune-prompts": runtime.Stream(),
    "lucky-prompts": runtime.Stream(),  # prompts that read the initial activity of each neuron
    "prune-random": runtime.Stream(width=100),  # random pruning masks, one per draw (100 draws)
    "random-mix": runtime.Stream(kind="numpy"),  # Prop. 2's null: random non-negative mixes of the patterns
    "alpha-shuffle": runtime.Stream(kind="numpy", width=2),  # the alpha sweep's null: its alpha labels shuffled
    "lucky-shuffle": runtime.Stream(kind="numpy"),  # the lucky neurons' null: group labels shuffled
    "baseline-prompts": runtime.Stream(width=50),  # classical baselines: one per context length
    "sweep-members": runtime.Stream(width=100),  # the alpha sweep's models
    "small-norm-repeat": runtime.Stream(width=8),  # the small-norm control's null: repeated prompt draws
    "sparse-test": runtime.Stream(),  # the task-fraction control's test prompts
    "gpt-constructions": runtime.Stream(),  # the GPT's prompts of the OOD constructions
}
