"""Chapter 3's sizes, one :class:`Config` per profile (``CONFIGS[profile]``), its named random
streams, and the check of the data generator's arguments.

A field is either *trained* or *checked* (:func:`iclbook.runtime.check`). Trained fields key the
weight cache: the data, the sizes, every schedule and optimiser of a cached training run (the
measures recorded at its checkpoints included). Checked fields are read only after training:
which members of the data grid a verdict compares, the phenomenological model's descents (a
computation of the chapter, no cached weight), and whether a profile trains long enough to judge
the claims. Changing a checked field retrains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from iclbook import runtime


@dataclass(frozen=True)
class Config:
    """Every size of chapter 3, per profile (see the chapter's reproduction notes)."""

    # data (the author's defaults; K, B, p_B, p_C, eps of the paper's Fig. 3)
    K: int = 256
    L: int = 32
    N: int = 8
    D: int = 63
    Nmax: int = 32
    eps: float = 0.1
    zipf: float = 0.0
    B: int = 1
    p_B: float = 1.0
    p_C: float = 0.8
    K_c: int = 128
    # training of the main run (the book's CPU calibration, not the paper's SGD 0.01 x 150k):
    # Adam at the spec's suggested 1e-3; at smaller steps the plateau lasts about 1/lr longer and
    # the jump keeps its shape (benchmarks/calibrate_induction.py, printed in the chapter)
    optimizer: str = "adam"
    lr: float = 1e-3
    decay: float = 1e-6  # per-step multiplicative shrink (1 - decay), as in the author's update
    batch: int = 64
    steps: int = 1500
    eval_every: int = 50  # several evaluations inside the jump
    n_eval: int = 1000  # sequences per evaluation set, measured at every checkpoint
    seeds: int = 3
    # plain SGD at a large step, several seeds: how the MLP can die
    sgd_lr: float = 0.1
    sgd_batch: int = 64
    # 17 of 24 runs at the chapter seeds 0, 5-7 fell silent in 1,000 steps, all by step 500
    sgd_steps: int = 500
    sgd_seeds: int = 6
    # data dependence: members (K, B, p_B, Zipf exponent, eps) trained as one batched ensemble,
    # all with p_C = 0 as in the author's Fig. 2 scripts
    grid: tuple[tuple[int, int, float, float, float], ...] = (
        (64, 4, 1.0, 0.0, 0.1),
        (512, 4, 1.0, 0.0, 0.1),
        (512, 0, 1.0, 0.0, 0.1),
        (512, 4, 0.5, 1.0, 0.1),
    )
    grid_steps: int = 1500
    # the minimal model: AdamW on its classifier (plain SGD kills the classifier, see the chapter)
    # and plain SGD on its three scalars (the paper's optimiser for the part that forms the head);
    # AdamW on everything is the contrast
    minimal_lr: float = 1e-3
    minimal_scalar_lr: float = 0.3
    minimal_steps: int = 2000  # L = N and the AdamW contrast: long enough for every outcome to settle
    minimal_eval_every: int = 100
    minimal_steps_icl: int = 1000  # L = 32 with SGD scalars: long enough for every seed to jump
    minimal_seeds: int = 6
    minimal_adam_seeds: int = 3  # the AdamW contrast, a control: the first of those seeds
    # --- checked: read after training only ---------------------------------------------------
    # the phenomenological model (plain gradient descent, as in the spec's calibration; Adam at
    # these rates is the contrast): a computation of the chapter, no cached weight depends on it
    pheno_steps: int = runtime.check(5000)
    pheno_lr: float = runtime.check(0.01)
    pheno_adam_lrs: tuple[float, ...] = runtime.check((3e-3, 1e-2))
    # the data-dependence comparisons the chapter reads from the grid: K low -> high at B = 4,
    # B low -> high at K = compare_K[1], and the mixed (p_B < 1, Zipf) run, (K, B, p_B, zipf)
    compare_K: tuple[int, int] = runtime.check((64, 512))
    compare_B: tuple[int, int] = runtime.check((0, 4))
    mixed: tuple[int, int, float, float] | None = runtime.check((512, 4, 0.5, 1.0))
    # False at smoke: too few steps to learn; every row is recorded, inconclusive (ch.unjudged)
    judged: bool = runtime.check(True)
    # the minimal model over many seeds (iclbook.induction.kinetics): trained in the chapter in
    # seconds, cached nowhere, so every size is a checked field. Onsets over 30+ seeds (Nguyen &
    # Reddy 2025), read on a grid of kinetics_eval_every steps; a run stops once every seed's
    # IC accuracy has passed its onset (at most kinetics_steps steps)
    kinetics_seeds: int = runtime.check(32)
    kinetics_steps: int = runtime.check(1500)
    kinetics_eval_every: int = runtime.check(25)
    kinetics_n_eval: int = runtime.check(400)
    # the beta2 ablation of the minimal model with item attention: this many seeds, each trained
    # free, with beta2 frozen (same batches) and free on other batches (the null)
    curriculum_seeds: int = runtime.check(4)
    # in-weight learning alone (iid sequences) at each K: steps to half the IW sequences right
    iw_Ks: tuple[int, ...] = runtime.check((64, 128, 256, 512))
    iw_seeds: int = runtime.check(3)
    iw_steps: int = runtime.check(1000)
    iw_eval_every: int = runtime.check(10)

    @property
    def P(self) -> int:
        """Number of one-hot position slots."""
        return 2 * self.Nmax + 1

    @property
    def d(self) -> int:
        """Token size: the position slots and the item or label vector."""
        return self.P + self.D

    @property
    def T(self) -> int:
        """Tokens per sequence: ``N`` item-label pairs and the query."""
        return 2 * self.N + 1


def _paper_grid() -> tuple[tuple[int, int, float, float, float], ...]:
    """The author's Fig. 2 scripts: K x B at p_B = 1, an eps sweep and a Zipf sweep at K = 1024
    (the Zipf sweep at p_B = 0.5, since bursty sequences ignore the Zipf law)."""
    kb = tuple((K, B, 1.0, 0.0, 0.1) for K in (128, 256, 512, 2048) for B in (0, 1, 2, 4))
    eps = tuple((1024, 1, 1.0, 0.0, e) for e in (0.0, 0.4, 0.8, 1.6, 3.2, 6.4))
    zipf = tuple((1024, 1, 0.5, a, 0.1) for a in (0.0, 0.5, 1.0, 1.5))
    return kb + eps + zipf


CONFIGS: dict[str, Config] = {
    "smoke": Config(
        steps=300,
        eval_every=50,
        n_eval=300,
        seeds=2,
        sgd_steps=150,
        sgd_seeds=2,
        grid=((64, 4, 1.0, 0.0, 0.1), (512, 0, 1.0, 0.0, 0.1)),
        grid_steps=100,
        minimal_steps=600,
        minimal_steps_icl=300,
        minimal_eval_every=100,
        minimal_seeds=2,
        judged=False,
        kinetics_seeds=4,  # the fewest the readings of a distribution take (4)
        kinetics_steps=50,
        kinetics_n_eval=100,
        curriculum_seeds=1,
        iw_Ks=(64, 128),
        iw_seeds=1,
        iw_steps=30,
    ),
    "book": Config(),
    # the author's settings (SGD 0.01, batch 128, 150k steps, six seeds); needs a GPU
    "paper": Config(
        optimizer="sgd",
        lr=0.01,
        batch=128,
        steps=150_000,
        eval_every=1000,
        n_eval=10_000,
        seeds=6,
        grid=_paper_grid(),
        grid_steps=150_000,
        minimal_steps=20_000,
        minimal_steps_icl=20_000,
        minimal_eval_every=250,
        compare_K=(128, 512),
        mixed=(1024, 1, 0.5, 1.0),
        kinetics_seeds=64,
        kinetics_steps=4000,
        curriculum_seeds=16,
        iw_Ks=(64, 128, 256, 512, 1024, 2048),
        iw_seeds=4,
        iw_steps=4000,
    ),
}


#: Chapter 3's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed; each training run draws its own task, evaluation sets and batches from its model seed
#: (:data:`iclbook.runtime.LIBRARY_STREAMS`).
STREAMS = {
    "example-task": runtime.Stream(),  # the task of the figures and the forward-pass check
    "untrained-net": runtime.Stream(),  # the untrained network of the forward-pass check
    "example-sets": runtime.Stream(),  # the sequences drawn in the task figure
    "probe": runtime.Stream(),  # sequences of the forward-pass check
    "grid": runtime.Stream(),  # the model seed of every member of the data grid
    "sgd-members": runtime.Stream(width=100),  # the plain-SGD control's models
    "minimal-members": runtime.Stream(width=100),  # the minimal model's seeds
    # the minimal model over many seeds (kinetics): the seeds, batches and evaluation sets of the
    # ensemble of onsets and of the beta2 ablation (its first seeds; curriculum-batches 0: the
    # free and frozen arms, 1: the free copy on other batches), and of in-weight learning by K
    "kinetics-members": runtime.Stream(width=100),
    "kinetics-batches": runtime.Stream(),
    "kinetics-eval": runtime.Stream(),
    "curriculum-batches": runtime.Stream(width=2),
    "iw-members": runtime.Stream(width=100),
    "iw-batches": runtime.Stream(),
    "iw-eval": runtime.Stream(),
    "kinetics-boot": runtime.Stream(kind="numpy"),  # bootstrap and null draws of the readings
}


def check_data_args(
    *, K: int, L: int, N: int, B: int, p_B: float, p_C: float, eps: float, zipf: float, Nmax: int | None = None
) -> None:
    """Raise a clear ``ValueError`` for arguments the generator cannot honour."""
    if L < 2 or K < L or K % L:
        raise ValueError(f"K must be a positive multiple of L (every label owns K/L classes); got K={K}, L={L}")
    if N < 1:
        raise ValueError(f"N (item-label pairs) must be >= 1, got {N}")
    if B < 0 or (B > 0 and (N % B or B >= N)):
        raise ValueError(f"burstiness B must be 0 or a divisor of N smaller than N; got B={B}, N={N}")
    for name, p in (("p_B", p_B), ("p_C", p_C)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a probability and must lie in [0, 1], got {p}")
    if eps < 0 or zipf < 0:
        raise ValueError(f"eps and the Zipf exponent must be >= 0, got eps={eps}, zipf={zipf}")
    if Nmax is not None and Nmax < N:
        raise ValueError(f"Nmax must be >= N so the positions fit, got Nmax={Nmax}, N={N}")
    distinct = N // (B if B else N // 2 or 1)
    if distinct > L:
        raise ValueError(f"a bursty context needs N/B={distinct} distinct labels, more than L={L}")
