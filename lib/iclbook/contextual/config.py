"""Chapter 4's sizes, one :class:`Config` per profile (``CONFIGS[profile]``)."""

from __future__ import annotations

from dataclasses import dataclass

from iclbook import runtime


@dataclass(frozen=True)
class Config:
    """Every size of chapter 4 in one place.

    The task follows the paper's v1 Section 4 as reconstructed in the spec (d=2, N=50,
    concatenated tokens). The paper does not give the architecture or the optimiser; the values
    below are the spec's recommendation (4 heads of key size 4, MLP 3->64->3 with GELU,
    Adam 1e-3, batch 64).

    Fields declared with :func:`iclbook.runtime.check` are read only by measurements made after
    training (finetuning on frozen blocks, the convergence control, thresholds): they stay out of
    the weight cache's key, so editing one retrains nothing. Every other field shapes a trained
    block or its stored history.
    """

    d: int = 2  # input dimension of the regression task; tokens have d + 1 entries
    N: int = 50  # context pairs per prompt
    heads: int = 4
    d_k: int = 4  # key/value size per head
    width: int = 64  # MLP hidden width h
    steps: int = 3000  # training steps of the main block
    batch: int = 64
    lr: float = 1e-3
    seeds: int = 3  # ensemble members (seeds) trained as one batched model
    checkpoint_every: int = 100
    n_val: int = 512  # validation prompts at each checkpoint
    variant_steps: int = 1000  # training steps of the skip and pre-LN blocks
    n_partial: int = runtime.check(20)  # |Y| in the partial-context experiment
    n_tasks: int = runtime.check(100)  # prompts for the token-by-token and convergence experiments
    untrained_seeds: int = runtime.check(5)  # untrained blocks of each kind in the convergence controls
    # The finetuning comparison: a sweep of SGD learning rates and steps per context example,
    # on n_ft_tasks tasks split in two halves (one selects the best setting, the other reports it).
    ft_lrs: tuple[float, ...] = runtime.check((0.01, 0.1, 0.3, 1.0, 3.0))
    ft_steps: tuple[int, ...] = runtime.check((1, 10))
    # the grid is extended around its best setting (3x the rate, 3x the steps) until that is interior,
    # up to this many SGD steps per example (cx.refine_setting)
    ft_max_steps: int = runtime.check(90)
    paper_ft_lr: float = runtime.check(0.01)  # the paper's learning rate
    n_ft_tasks: int = runtime.check(300)
    # Finetuning W alone on all N examples of a task until it fits them (damped Gauss-Newton, at
    # most conv_iters steps): converged when every task's training MSE is at most conv_tol, a
    # millionth of the labels' variance d = 2 (the W-only fit has h * m = 192 weights for N = 50
    # equations, so an interpolating W exists and the loss can go to 0).
    conv_iters: int = runtime.check(3000)
    conv_tol: float = runtime.check(2e-6)
    n_fresh: int = runtime.check(10)  # fresh queries per task on which a query's patch is tried
    n_random_patches: int = runtime.check(50)  # random rank-1 patches per task, shown beside the one-query patch
    # calibration queries per task of the static patch (fitted over K queries; K = 1 is Thm 2.2's patch)
    static_Ks: tuple[int, ...] = runtime.check((1, 3, 5, 20))
    layer_steps: int = 300  # brief training of the non-attention layers
    layer_lr: float = 3e-3
    stack_depth: int = 2  # blocks in the stacked model
    stack_steps: int = 300  # one seed's stack (stacks train ~10x slower than a block)
    # A pass criterion that depends on the profile: after training, the loss with the context must
    # be below this fraction of the loss on the query alone, for every seed (the chapter prints the
    # measured ratio).
    icl_ratio: float = runtime.check(0.15)
    rnn_hidden: int = 16
    window: int = 8  # sliding-window attention width


CONFIGS: dict[str, Config] = {
    "smoke": Config(
        steps=300,
        seeds=2,
        checkpoint_every=50,
        n_val=128,
        variant_steps=100,
        layer_steps=20,
        icl_ratio=0.5,
        n_tasks=40,
        untrained_seeds=2,
        ft_lrs=(0.01, 0.3, 1.0),
        n_ft_tasks=60,
        stack_steps=60,
    ),
    "book": Config(),
    "paper": Config(
        steps=20000,
        batch=256,
        seeds=5,
        checkpoint_every=500,
        n_val=2048,
        variant_steps=5000,
        n_tasks=1000,
        n_ft_tasks=2000,
        layer_steps=3000,
        icl_ratio=0.1,
        stack_steps=5000,
        untrained_seeds=10,
    ),
}


#: Chapter 4's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed (the model seeds of its ensembles are the chapter's ``members``).
STREAMS = {
    "prompt-figure": runtime.Stream(),  # the prompt of the task figure
    "val": runtime.Stream(),  # the validation prompts every check reads
    "dynamics-tasks": runtime.Stream(),  # prompts of the token-by-token dynamics
    "ft-tasks": runtime.Stream(),  # tasks of the finetuning comparison
    "transfer-tasks": runtime.Stream(),  # tasks of the transfer test
    "transfer-queries": runtime.Stream(),  # its fresh queries
    "static-queries": runtime.Stream(),  # calibration and fresh queries of the static patch
    "random-patches": runtime.Stream(width=10),  # random rank-1 patches of the transfer test's null, per member
    "invariances": runtime.Stream(),  # the permutation of the context in the invariance checks
    "partial-checks": runtime.Stream(width=10),  # the Y ⊂ C split, one per ensemble member
    "layer-checks": runtime.Stream(width=10),  # the same for each other contextual layer
    "untrained": runtime.Stream(width=100),  # untrained blocks of the controls
    "untrained-stack": runtime.Stream(),  # the untrained stack of the stack check
    "untrained-preln": runtime.Stream(),  # the untrained pre-LN block of the implicit-step control
    "modern-blocks": runtime.Stream(width=10),  # the Gemma-style, post-norm and parallel blocks
}
