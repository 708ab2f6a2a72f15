"""Reddy (ICLR 2024): data dependence and the abrupt formation of an induction head.

The task, as in the author's JAX code (the book's spec, section 2):

* ``K`` classes with fixed means ``mu_k ~ N(0, I_D / D)`` and ``L`` labels with fixed vectors
  ``lambda_l ~ N(0, I_D / D)``; class ``k`` has label ``k mod L`` (``K`` a multiple of ``L``);
* an item of class ``k`` is ``(mu_k + eps * eta) / sqrt(1 + eps^2)`` with ``eta ~ N(0, I_D / D)``;
* a sequence is ``N`` item-label pairs and a query item; the target is the query's label;
* *bursty* sequences (probability ``p_B``) hold ``N / B`` classes with distinct labels, each ``B``
  times, and the query's class is one of them; *non-bursty* ones draw every class iid from the
  Zipf law ``p(k) ~ k^-alpha``; *novel-class* sequences (probability ``p_C``, drawn first) are
  bursty over ``K_c = 128`` fresh class means drawn for every batch;
* a token is ``[one-hot position ; vector]`` with ``2 Nmax + 1`` position slots; each sequence's
  positions start at a random shift.

The network: two causal single-head attention layers (no output projection, no ``1/sqrt(d)``,
no LayerNorm, residual updates), then three ReLU layers with one scalar bias each and a linear
read-out to ``L`` logits, applied at the query token. Shapes: ``n`` sequences, ``T = 2N + 1``
tokens, ``d = 2 Nmax + 1 + D``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from iclbook import runtime, train

# ---------------------------------------------------------------------------------------------
# 0. Configurations
# ---------------------------------------------------------------------------------------------


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
    # Adam at the spec's suggested 1e-3; at 3e-4 and 6e-4 the plateau lasts 1/lr longer and the
    # jump keeps its shape (rise/onset 0.20-0.30 over three seeds at each step, see the chapter)
    optimizer: str = "adam"
    lr: float = 1e-3
    decay: float = 1e-6  # per-step multiplicative shrink (1 - decay), as in the author's update
    batch: int = 64
    steps: int = 1500
    eval_every: int = 50   # the jump takes about 150 steps: three evaluations inside it
    n_eval: int = 1000
    seeds: int = 3
    # plain SGD at a large step, several seeds: how the MLP can die
    sgd_lr: float = 0.1
    sgd_batch: int = 64
    sgd_steps: int = 1000
    sgd_seeds: int = 6
    # data dependence: members (K, B, p_B, Zipf exponent, eps) trained as one batched ensemble,
    # all with p_C = 0 as in the author's Fig. 2 scripts
    grid: tuple[tuple[int, int, float, float, float], ...] = (
        (64, 4, 1.0, 0.0, 0.1), (512, 4, 1.0, 0.0, 0.1), (512, 0, 1.0, 0.0, 0.1),
        (512, 4, 0.5, 1.0, 0.1))
    grid_steps: int = 1500
    # the minimal model: AdamW on its classifier (plain SGD kills the classifier, see the chapter)
    # and plain SGD on its three scalars (the paper's optimiser for the part that forms the head);
    # AdamW on everything is the contrast
    minimal_lr: float = 1e-3
    minimal_scalar_lr: float = 0.3
    minimal_steps: int = 2000      # L = N and the AdamW contrast: every outcome is settled by then
    minimal_eval_every: int = 100  # (4,000-step runs: IC reaches 0.9 at 600-1600 steps under AdamW)
    minimal_steps_icl: int = 1000  # L = 32 with SGD scalars: every seed jumps by step 600
    minimal_seeds: int = 6
    minimal_adam_seeds: int = 3  # the AdamW contrast, a control: the first three of those seeds
    # the phenomenological model (plain gradient descent, as in the spec's calibration; Adam at
    # these rates is the contrast)
    pheno_steps: int = 5000
    pheno_lr: float = 0.01
    pheno_adam_lrs: tuple[float, ...] = (3e-3, 1e-2)
    # the data-dependence comparisons the chapter reads from the grid: K low -> high at B = 4,
    # B low -> high at K = compare_K[1], and the mixed (p_B < 1, Zipf) run, (K, B, p_B, zipf)
    compare_K: tuple[int, int] = (64, 512)
    compare_B: tuple[int, int] = (0, 4)
    mixed: tuple[int, int, float, float] | None = (512, 4, 0.5, 1.0)
    checks: bool = True  # False at smoke: too few steps to learn; only the code paths run

    @property
    def P(self) -> int:
        """Number of one-hot position slots."""
        return 2 * self.Nmax + 1

    @property
    def d(self) -> int:
        return self.P + self.D

    @property
    def T(self) -> int:
        return 2 * self.N + 1


def _paper_grid() -> tuple[tuple[int, int, float, float, float], ...]:
    """The author's Fig. 2 scripts: K x B at p_B = 1, an eps sweep and a Zipf sweep at K = 1024
    (the Zipf sweep at p_B = 0.5, since bursty sequences ignore the Zipf law)."""
    kb = tuple((K, B, 1.0, 0.0, 0.1) for K in (128, 256, 512, 2048) for B in (0, 1, 2, 4))
    eps = tuple((1024, 1, 1.0, 0.0, e) for e in (0.0, 0.4, 0.8, 1.6, 3.2, 6.4))
    zipf = tuple((1024, 1, 0.5, a, 0.1) for a in (0.0, 0.5, 1.0, 1.5))
    return kb + eps + zipf


CONFIGS: dict[str, Config] = {
    "smoke": Config(steps=300, eval_every=50, n_eval=300, seeds=2, sgd_steps=150, sgd_seeds=2,
                    grid=((64, 4, 1.0, 0.0, 0.1), (512, 0, 1.0, 0.0, 0.1)), grid_steps=100,
                    minimal_steps=600, minimal_steps_icl=300, minimal_eval_every=100, minimal_seeds=2,
                    checks=False),
    "book": Config(),
    # the author's settings (SGD 0.01, batch 128, 150k steps, six seeds); needs a GPU
    "paper": Config(optimizer="sgd", lr=0.01, batch=128, steps=150_000, eval_every=1000,
                    n_eval=10_000, seeds=6, grid=_paper_grid(), grid_steps=150_000,
                    minimal_steps=20_000, minimal_steps_icl=20_000, minimal_eval_every=250, compare_K=(128, 512),
                    mixed=(1024, 1, 0.5, 1.0)),
}


#: Chapter 3's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed; each training run draws its own task, evaluation sets and batches from its model seed
#: (:data:`iclbook.runtime.LIBRARY_STREAMS`).
STREAMS = {
    "example-task": runtime.Stream(0),  # the task of the figures and the forward-pass check
    "untrained-net": runtime.Stream(0),  # the untrained network of the forward-pass check
    "example-sets": runtime.Stream(1),  # the sequences drawn in the task figure
    "probe": runtime.Stream(2),  # sequences of the forward-pass check
    "grid": runtime.Stream(0),  # the model seed of every member of the data grid
    "sgd-members": runtime.Stream(100, width=100, scale=1000),  # the plain-SGD control's models
    "minimal-members": runtime.Stream(200, width=100, scale=1000),  # the minimal model's seeds
}


def check_data_args(*, K: int, L: int, N: int, B: int, p_B: float, p_C: float, eps: float,
                    zipf: float, Nmax: int | None = None) -> None:
    """Raise a clear ``ValueError`` for arguments the generator cannot honour."""
    if L < 2 or K < L or K % L:
        raise ValueError(f"K must be a positive multiple of L (every label owns K/L classes); "
                         f"got K={K}, L={L}")
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


# ---------------------------------------------------------------------------------------------
# 1. The task
# ---------------------------------------------------------------------------------------------


@dataclass
class Task:
    """The fixed quantities of one run: class means, label vectors, and the Zipf law."""

    mus: torch.Tensor  # (K, D)
    lambdas: torch.Tensor  # (L, D)
    zipf_p: torch.Tensor  # (K,) rank-frequency law over the class index

    @property
    def K(self) -> int:
        return self.mus.shape[0]

    @property
    def L(self) -> int:
        return self.lambdas.shape[0]

    @property
    def D(self) -> int:
        return self.mus.shape[1]


def make_task(cfg: Config, generator: torch.Generator, *, K: int | None = None) -> Task:
    """Draw ``K`` class means and ``L`` label vectors, ``N(0, I_D / D)`` each."""
    K = cfg.K if K is None else K
    check_data_args(K=K, L=cfg.L, N=cfg.N, B=cfg.B, p_B=cfg.p_B, p_C=cfg.p_C, eps=cfg.eps,
                    zipf=cfg.zipf, Nmax=cfg.Nmax)
    scale = 1.0 / math.sqrt(cfg.D)
    lambdas = torch.randn(cfg.L, cfg.D, generator=generator) * scale
    mus = torch.randn(K, cfg.D, generator=generator) * scale
    p = torch.arange(1, K + 1, dtype=torch.float64) ** (-cfg.zipf)
    return Task(mus=mus, lambdas=lambdas, zipf_p=(p / p.sum()).float())


@dataclass
class Sequences:
    """A batch of sequences and what the analysis needs to know about them.

    ``classes`` and ``query_class`` index the task's classes; novel classes are numbered from
    ``K`` on (``K + j`` for the ``j``-th fresh mean of that batch), so a match between a context
    item and the query is ``classes == query_class[:, None]`` in every case.
    """

    tokens: torch.Tensor  # (n, T, d)
    target: torch.Tensor  # (n,) the label the model should output
    classes: torch.Tensor  # (n, N) class of each context item
    query_class: torch.Tensor  # (n,)
    context_labels: torch.Tensor  # (n, N) label index shown after each item
    novel: torch.Tensor  # (n,) bool
    bursty: torch.Tensor  # (n,) bool
    shift: torch.Tensor  # (n,) first position slot

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Sequences:
        """A new batch with ``fn`` applied to every field (``lambda t: t[:n]`` keeps the first
        ``n`` sequences, ``lambda t: t.to(device)`` moves them)."""
        return Sequences(**{k: fn(getattr(self, k)) for k in self.__dataclass_fields__})


def _distinct_label_classes(n: int, m: int, n_classes: int, L: int,
                            g: torch.Generator) -> torch.Tensor:
    """``(n, m)`` classes with ``m`` distinct labels per row (the author's ``no_repeats``):
    labels without replacement, then a uniform class among the ``n_classes / L`` of each label."""
    labels = torch.rand(n, L, generator=g).argsort(dim=1)[:, :m]
    within = torch.randint(0, n_classes // L, (n, m), generator=g)
    return within * L + labels


def _bursty_rows(n: int, N: int, B: int, n_classes: int, L: int,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts of ``N / B`` distinct-label classes each repeated ``B`` times, shuffled, and a
    query class drawn uniformly among them."""
    m = N // B
    base = _distinct_label_classes(n, m, n_classes, L, g)
    query = base.gather(1, torch.randint(0, m, (n, 1), generator=g)).squeeze(1)
    tiled = base.repeat(1, B)
    order = torch.rand(n, N, generator=g).argsort(dim=1)
    return tiled.gather(1, order), query


def sample(task: Task, n: int, cfg: Config, generator: torch.Generator, *, B: int | None = None,
           p_B: float | None = None, p_C: float | None = None, flip_labels: bool = False,
           eps: float | None = None) -> Sequences:
    """Draw ``n`` sequences as the author's ``generate_input_seqs`` does.

    ``B``, ``p_B``, ``p_C`` and ``eps`` default to ``cfg``'s. ``B = 0`` means no bursty sequences
    (``p_B = 0``), and novel-class sequences then use ``B = N / 2``. With ``flip_labels`` every
    context label of a known-class sequence is replaced by the next label ``(y + 1) mod L``, and
    the target becomes the query's next label (the IC2 evaluation set).
    """
    B = cfg.B if B is None else B
    p_B = cfg.p_B if p_B is None else p_B
    p_C = cfg.p_C if p_C is None else p_C
    eps = cfg.eps if eps is None else eps
    N, L, K, D = cfg.N, task.L, task.K, task.D
    check_data_args(K=K, L=L, N=N, B=B, p_B=p_B, p_C=p_C, eps=eps, zipf=cfg.zipf, Nmax=cfg.Nmax)
    if n < 1:
        raise ValueError(f"need n >= 1 sequences, got {n}")
    g = generator
    if B == 0:
        B, p_B = N // 2, 0.0
    scale = 1.0 / math.sqrt(D)
    e_fac = 1.0 / math.sqrt(1.0 + eps ** 2)

    # known classes: bursty rows, replaced by iid Zipf rows where not bursty
    classes, query = _bursty_rows(n, N, B, K, L, g)
    bursty = torch.rand(n, generator=g) < p_B
    iid = torch.multinomial(task.zipf_p, n * (N + 1), replacement=True, generator=g).view(n, N + 1)
    classes = torch.where(bursty[:, None], classes, iid[:, :N])
    query = torch.where(bursty, query, iid[:, N])
    # novel classes: fresh means for this call, always bursty
    novel_mus = torch.randn(cfg.K_c, D, generator=g) * scale
    c_classes, c_query = _bursty_rows(n, N, B, cfg.K_c, L, g)
    novel = torch.rand(n, generator=g) < p_C

    all_classes = torch.cat([classes, query[:, None]], dim=1)
    all_novel = torch.cat([c_classes, c_query[:, None]], dim=1)
    ids = torch.where(novel[:, None], all_novel + K, all_classes)  # rows of [known means; novel means]
    means = torch.cat([task.mus, novel_mus])[ids]  # one gather instead of two and a where
    noise = torch.randn(n, N + 1, D, generator=g) * scale
    items = e_fac * (means + eps * noise)  # (n, N+1, D)
    labels_all = torch.where(novel[:, None], all_novel % L, all_classes % L)  # (n, N+1)
    shown = labels_all[:, :N]
    target = labels_all[:, N]
    if flip_labels:
        shown = torch.where(novel[:, None], shown, (shown + 1) % L)
        target = torch.where(novel, target, (target + 1) % L)

    T = 2 * N + 1
    tokens = torch.zeros(n, T, cfg.P + D)
    tokens[:, 0:2 * N:2, cfg.P:] = items[:, :N]
    tokens[:, 1:2 * N:2, cfg.P:] = task.lambdas[shown]
    tokens[:, -1, cfg.P:] = items[:, N]
    shift = torch.randint(0, cfg.P - T + 1, (n,), generator=g)
    slots = shift[:, None] + torch.arange(T)
    tokens.scatter_(2, slots[:, :, None], 1.0)
    return Sequences(tokens=tokens, target=target, classes=ids[:, :N], query_class=ids[:, N],
                     context_labels=shown, novel=novel, bursty=bursty | novel, shift=shift)


def eval_sets(task: Task, cfg: Config, generator: torch.Generator, n: int | None = None,
              *, B: int | None = None) -> dict[str, Sequences]:
    """The author's four evaluation sets, drawn once: ``test`` (the training distribution),
    ``IC`` (novel classes, bursty), ``IC2`` (known classes, bursty, labels flipped by one) and
    ``IW`` (iid Zipf sequences: only the memorised class-to-label map can solve them)."""
    n = cfg.n_eval if n is None else n
    B = cfg.B if B is None else B
    return {
        "test": sample(task, n, cfg, generator, B=B),
        "IC": sample(task, n, cfg, generator, B=B, p_B=1.0, p_C=1.0),
        "IC2": sample(task, n, cfg, generator, B=B, p_B=1.0, p_C=0.0, flip_labels=True),
        "IW": sample(task, n, cfg, generator, B=0, p_B=0.0, p_C=0.0),
    }


# ---------------------------------------------------------------------------------------------
# 2. The network
# ---------------------------------------------------------------------------------------------


class ReluClassifier(nn.Module):
    """Three ReLU layers ``h <- relu(W h + b)`` with one *scalar* bias each, then a linear
    read-out to ``L`` logits without bias; the author's initialisation."""

    def __init__(self, width: int, L: int, generator: torch.Generator):
        super().__init__()

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.w1, self.w2, self.w3 = (normal(width, width, std=math.sqrt(2.0 / width)) for _ in range(3))
        self.b1, self.b2, self.b3 = (normal(1, std=math.sqrt(1.0 / width)) for _ in range(3))
        self.readout = normal(L, width, std=math.sqrt(1.0 / width))

    def hidden(self, z: torch.Tensor, *, w1: torch.Tensor | None = None,
               mask1: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The three ReLU layers' activations for inputs ``z`` ``(..., d)``.

        ``w1`` replaces the first weight matrix: ``(width, d)``, or one matrix per input
        ``(..., width, d)`` (a patched weight, as in chapter 5). ``mask1`` ``(width,)`` multiplies
        the first layer's activations (1 keeps a neuron, 0 prunes it)."""
        w1 = self.w1 if w1 is None else w1
        if w1.dim() == 2:
            z = torch.relu(z @ w1.T + self.b1)
        else:
            z = torch.relu(torch.einsum("...hm,...m->...h", w1, z) + self.b1)
        if mask1 is not None:
            z = z * mask1
        out = [z]
        for w, b in ((self.w2, self.b2), (self.w3, self.b3)):
            z = torch.relu(z @ w.T + b)
            out.append(z)
        return out

    def forward(self, z: torch.Tensor, *, w1: torch.Tensor | None = None,
                mask1: torch.Tensor | None = None) -> torch.Tensor:
        return self.hidden(z, w1=w1, mask1=mask1)[-1] @ self.readout.T


class InductionNet(nn.Module):
    """Two causal single-head attention layers and a three-layer ReLU classifier (author's code).

    ``forward`` returns the ``L`` logits at the query. It uses exact algebraic shortcuts: layer 1
    reassociates ``(u Q^T)(u K^T)^T = u (Q^T K) u^T`` and ``a (u V^T) = (a u) V^T``; layer 2 and
    the classifier run at the query token only, which is all the read-out sees. ``direct``
    computes every product as written in the author's code, at every token; a test checks that
    the two agree to float precision. ``attention`` returns both layers' maps for analysis.
    """

    #: What :meth:`internals` returns (:mod:`iclbook.internals`); ``T`` tokens, the query last.
    INTERNALS = {
        "att1": "(n, T, T) layer 1's attention map (row: the attending token)",
        "resid1": "(n, T, d) the residual stream after layer 1",
        "att2": "(n, T) layer 2's attention row at the query",
        "query_state": "(n, d) the residual stream at the query after layer 2: the classifier's input",
        "relu1": "(n, width) the classifier's first ReLU layer", "relu2": "(n, width) its second",
        "relu3": "(n, width) its third", "logits": "(n, L) the output at the query",
    }

    def __init__(self, cfg: Config, generator: torch.Generator):
        super().__init__()
        d, s = cfg.d, 1.0 / math.sqrt(cfg.D)

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.q1, self.k1, self.v1 = (normal(d, d, std=s) for _ in range(3))
        self.q2, self.k2, self.v2 = (normal(d, d, std=s) for _ in range(3))
        self.mlp = ReluClassifier(d, cfg.L, generator)

    @staticmethod
    def _causal(T: int, device: torch.device) -> torch.Tensor:
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()

    def _layer1(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual stream after layer 1 and its attention map ``(n, T_query, T_key)``."""
        logits = (u @ (self.q1.T @ self.k1)) @ u.transpose(-1, -2)
        logits = logits.masked_fill(~self._causal(u.shape[-2], u.device), float("-inf"))
        att = logits.softmax(dim=-1)
        return u + (att @ u) @ self.v1.T, att

    def _layer2_query(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 2 at the last token only: its output and its attention row ``(n, T)``."""
        q = h[..., -1, :]
        r = (q @ self.q2.T) @ self.k2  # the key-space direction the query looks for
        att = (h @ r.unsqueeze(-1)).squeeze(-1).softmax(dim=-1)
        mixed = (att.unsqueeze(-2) @ h).squeeze(-2)
        return q + mixed @ self.v2.T, att

    def query_state(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream at the query after both layers: the classifier's input."""
        h, _ = self._layer1(tokens)
        return self._layer2_query(h)[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.query_state(tokens))

    def attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 1's full map ``(n, T, T)`` (row: query token) and layer 2's query row ``(n, T)``."""
        h, att1 = self._layer1(tokens)
        _, att2 = self._layer2_query(h)
        return att1, att2

    def internals(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of :data:`INTERNALS` on ``tokens`` ``(n, T, d)``, from one pass."""
        h, att1 = self._layer1(tokens)
        z, att2 = self._layer2_query(h)
        relu = self.mlp.hidden(z)
        return {"att1": att1, "resid1": h, "att2": att2, "query_state": z,
                "relu1": relu[0], "relu2": relu[1], "relu3": relu[2], "logits": relu[2] @ self.mlp.readout.T}

    def induction_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, N)`` each: layer-1 attention of every label to its item, and the query's layer-2
        attention to every label token (the inputs of :func:`progress_measures`)."""
        att1, att2 = self.attention(tokens)
        rows = torch.arange(1, tokens.shape[-2] - 1, 2, device=tokens.device)
        return att1[:, rows, rows - 1], att2[:, rows]

    def direct(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The author's computation, unshortened: logits and both full attention maps."""
        x, maps = tokens, []
        mask = self._causal(tokens.shape[-2], tokens.device)
        for q, k, v in ((self.q1, self.k1, self.v1), (self.q2, self.k2, self.v2)):
            queries, keys, values = x @ q.T, x @ k.T, x @ v.T
            att = (queries @ keys.transpose(-1, -2)).masked_fill(~mask, float("-inf")).softmax(-1)
            maps.append(att)
            x = x + att @ values
        return self.mlp(x)[..., -1, :], maps  # the author applies the MLP at every token


class MinimalNet(nn.Module):
    """The minimal model: the induction head reduced to three scalars, the classifier kept.

    Reconstructed from the paper's description (the spec, section 5): after layer 1 each label
    token holds ``lambda_j + sigmoid(beta1) x_j`` (``beta1``: the previous-token head); the query
    attends to the ``N`` label tokens with logits ``alpha sigmoid(beta1) x_q . x_j + beta2`` and
    to itself with logit 0; ``z = x_q + sum_j a_j lambda_j`` feeds the same ReLU classifier.
    The scalars start at 0, so at first the query spreads its attention evenly.
    """

    #: What :meth:`internals` returns (:mod:`iclbook.internals`); ``N`` item-label pairs.
    INTERNALS = {
        "prev_token": "(n, N) sigmoid(beta1), the previous-token head's strength at every label",
        "att2": "(n, N) the query's attention to the N label tokens",
        "query_state": "(n, D) x_q + sum_j a_j lambda_j: the classifier's input",
        "relu1": "(n, D) the classifier's first ReLU layer", "relu2": "(n, D) its second",
        "relu3": "(n, D) its third", "logits": "(n, L) the output at the query",
    }

    def __init__(self, cfg: Config, generator: torch.Generator):
        super().__init__()
        self.P, self.N = cfg.P, cfg.N
        self.beta1 = nn.Parameter(torch.zeros(()))
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta2 = nn.Parameter(torch.zeros(()))
        self.mlp = ReluClassifier(cfg.D, cfg.L, generator)

    def _parts(self, tokens: torch.Tensor):
        v = tokens[..., self.P:]
        return v[..., 0:2 * self.N:2, :], v[..., 1:2 * self.N:2, :], v[..., -1, :]

    def induction_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items, _, query = self._parts(tokens)
        s1 = torch.sigmoid(self.beta1)
        logits = self.alpha * s1 * (items @ query.unsqueeze(-1)).squeeze(-1) + self.beta2
        logits = torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)
        return s1.expand(logits[..., :-1].shape), logits.softmax(-1)[..., :-1]

    def _read(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The previous-token strength, the query's attention to the labels and the query state."""
        _, labels, query = self._parts(tokens)
        prev, a = self.induction_attention(tokens)
        return prev, a, query + (a.unsqueeze(-2) @ labels).squeeze(-2)

    def query_state(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._read(tokens)[2]

    def internals(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of :data:`INTERNALS` on ``tokens``, from one pass."""
        prev, a, z = self._read(tokens)
        relu = self.mlp.hidden(z)
        return {"prev_token": prev, "att2": a, "query_state": z,
                "relu1": relu[0], "relu2": relu[1], "relu3": relu[2], "logits": relu[2] @ self.mlp.readout.T}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.query_state(tokens))


def cross_entropy(model, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, target = batch
    return nn.functional.cross_entropy(model(tokens), target)


def optimizer_args(cfg: Config, *, optimizer: str | None = None, lr: float | None = None) -> dict:
    """``train.train`` keywords for the author's update ``p <- (1 - decay) p - step``.

    Plain SGD (the paper) uses torch's coupled weight decay ``decay / lr``, which is exactly that
    update; Adam (the book's CPU calibration) uses AdamW with the same value, whose decoupled
    shrink is the same multiplicative ``(1 - decay)`` per step.
    """
    optimizer = cfg.optimizer if optimizer is None else optimizer
    lr = cfg.lr if lr is None else lr
    name = {"adam": "adamw", "sgd": "sgd"}[optimizer]
    return {"optimizer": name, "lr": lr, "weight_decay": cfg.decay / lr}


# ---------------------------------------------------------------------------------------------
# 3. Progress measures
# ---------------------------------------------------------------------------------------------


#: Sequences per forward pass in the evaluations (memory at the paper profile's 10,000).
EVAL_CHUNK = 2000


@torch.no_grad()
def readout(model: nn.Module, seqs: Sequences, chunk: int = EVAL_CHUNK
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(n, L)`` logits of ``seqs`` and the classifier's three ReLU layers ``(n, width)`` each,
    from one forward pass (in chunks of ``chunk`` sequences)."""
    logits, acts = [], []
    for i in range(0, len(seqs), chunk):
        h = model.mlp.hidden(model.query_state(seqs.tokens[i:i + chunk]))
        acts.append(h)
        logits.append(h[-1] @ model.mlp.readout.T)     # = model(tokens), the same operations
    return torch.cat(logits), [torch.cat(layer) for layer in zip(*acts)]


def predict(model: nn.Module, seqs: Sequences, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    return readout(model, seqs, chunk)[0].argmax(-1)


@torch.no_grad()
def progress_measures(model: InductionNet | MinimalNet, seqs: Sequences,
                      pred: torch.Tensor | None = None) -> dict[str, float]:
    """The induction-head measures on a set of bursty sequences (the IC set in the chapter).

    * ``ILA1``: layer-1 attention from each label token to the item just before it;
    * ``TILA2``: layer-2 attention from the query to the label(s) whose item has the query's class;
    * ``TLA2``: layer-2 attention from the query to all label tokens;
    * ``CLA``: fraction of predictions that are one of the context's labels (``pred``: the
      model's predictions on ``seqs`` where already computed).
    """
    previous, on_labels = model.induction_attention(seqs.tokens)
    ila1 = previous.mean()
    match = (seqs.classes == seqs.query_class[:, None]).float()
    pred = predict(model, seqs) if pred is None else pred
    cla = (seqs.context_labels == pred[:, None]).any(dim=1).float().mean()
    return {"ILA1": float(ila1), "TILA2": float((on_labels * match).sum(1).mean()),
            "TLA2": float(on_labels.sum(1).mean()), "CLA": float(cla)}


@torch.no_grad()
def measure(model: InductionNet | MinimalNet, sets: dict[str, Sequences]) -> dict[str, float]:
    """Accuracy on each evaluation set, the test loss, the progress measures on IC, the active
    share of each ReLU layer (``live``: the smallest; when a layer's share falls towards 0 it
    goes silent and passes almost no gradient), the logit spread (the mean over labels of the
    logits' standard deviation across test sequences: 0 when the output no longer depends on
    the input) and the three biases. One forward pass per set, reused by every measure; with
    only some sets given (``"test"`` among them), the measures of the others are left out."""
    if "test" not in sets:
        raise ValueError(f"measure needs the test set; got {sorted(sets)}")
    passes = {name: readout(model, s) for name, s in sets.items()}
    out = {name: float((passes[name][0].argmax(-1) == s.target).float().mean())
           for name, s in sets.items()}
    logits, acts = passes["test"]
    out["loss"] = float(nn.functional.cross_entropy(logits, sets["test"].target))
    if "IC" in sets:
        out.update(progress_measures(model, sets["IC"], passes["IC"][0].argmax(-1)))
    live = [float((a > 0).float().mean()) for a in acts]
    out.update({f"live{i}": v for i, v in enumerate(live, 1)})
    out["live"] = min(live)
    out["spread"] = float(logits.std(dim=0).mean())
    out.update({f"b{i}": getattr(model.mlp, f"b{i}").item() for i in (1, 2, 3)})
    return out


# ---------------------------------------------------------------------------------------------
# 4. Training runs (one batched ensemble of seeds or data configurations)
# ---------------------------------------------------------------------------------------------


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

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the measure ``key``: the member's row of ``History.curve``,
        with its steps, ready for :mod:`iclbook.curves` (``curves.transition(*run.curve("IC"), B / N)``)."""
        return (np.array([h["step"] for h in self.history]),
                np.array([h[key] for h in self.history]))

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def comparison_points(cfg: Config) -> dict[str, tuple[int, int, float, float]]:
    """The grid members the chapter compares, as ``(K, B, p_B, zipf)``: ``low_B``, ``high``
    (``K = compare_K[1]``, ``B = compare_B[1]``), ``low_K``, and ``mixed`` when configured."""
    K_lo, K_hi = cfg.compare_K
    B_lo, B_hi = cfg.compare_B
    points = {"low_B": (K_hi, B_lo, 1.0, 0.0), "high": (K_hi, B_hi, 1.0, 0.0), "low_K": (K_lo, B_hi, 1.0, 0.0)}
    if cfg.mixed is not None:
        points["mixed"] = tuple(cfg.mixed)
    return points


def grid_member(runs: list, point: tuple[int, int, float, float]):
    """The run of the grid at ``point = (K, B, p_B, zipf)``; a clear error if the grid lacks it."""
    hits = [r for r in runs if (r.cfg.K, r.cfg.B, r.cfg.p_B, r.cfg.zipf) == tuple(point)]
    if not hits:
        have = sorted({(r.cfg.K, r.cfg.B, r.cfg.p_B, r.cfg.zipf) for r in runs})
        raise LookupError(f"the grid has no member (K, B, p_B, zipf) = {tuple(point)}; it has {have}: "
                          "set compare_K / compare_B / mixed of the profile's Config to members of its grid")
    return hits[0]


def classify_minimal(final: Mapping[str, float], N: int, baseline: float) -> str:
    """One seed's outcome of the minimal model, from its final measures (the chapter's rule).

    With ``u = 1/(N + 1)``, TILA2's value when the query attends evenly (the start):
    ``"induction"`` if TILA2 > 2u (the query finds the matching label); ``"mirror"`` if
    TILA2 < u/2 (it avoids the matching label); ``"stall"`` if TILA2 stays within a factor 2 of u
    and IC accuracy within 0.1 of ``baseline`` (nothing moved); ``"other"`` otherwise."""
    u = 1 / (N + 1)
    if final["TILA2"] > 2 * u:
        return "induction"
    if final["TILA2"] < u / 2:
        return "mirror"
    if abs(final["IC"] - baseline) <= 0.1:
        return "stall"
    return "other"


def grid_variants(cfg: Config) -> list[dict]:
    """``train_runs`` variants of the data-dependence grid (``p_C = 0`` throughout)."""
    return [{"K": K, "B": B, "p_B": p_B, "zipf": a, "eps": e, "p_C": 0.0}
            for K, B, p_B, a, e in cfg.grid]


def train_runs(cfg: Config, seeds: list[int], variants: list[dict] | None = None, *,
               optimizer: str | None = None, lr: float | None = None, batch: int | None = None,
               steps: int | None = None, eval_every: int | None = None, cache_name: str | None = None,
               net: str = "full", scalar_optimizer: Mapping[str, Any] | None = None,
               measured: Sequence[str] | None = None, keep_weights: bool = False,
               desc: str = "induction net") -> list[Run]:
    """Train one network per (seed, data variant) as one batched ensemble, through the cache.

    ``variants`` overrides data fields of ``cfg`` per member (e.g. ``{"K": 512, "B": 4}``).
    Each member draws its own task from its seed, so members are independent runs. The measures
    of :func:`measure` are taken every ``eval_every`` steps. ``net`` is ``"full"``
    (:class:`InductionNet`) or ``"minimal"`` (:class:`MinimalNet`). ``scalar_optimizer``
    (minimal model only), e.g. ``{"optimizer": "sgd", "lr": 0.3}``, trains the three scalars
    ``beta1, alpha, beta2`` with another optimizer than the classifier (no weight decay on them).
    ``measured`` names the evaluation sets measured at each checkpoint (default: all; ``("test",)``
    for the loss and the classifier's activity only); it changes no training step.
    ``keep_weights`` keeps every member's weights at every checkpoint (``Run.weights``,
    ``Run.at``), cached with the final weights; it changes no training step either.
    """
    nets = {"full": InductionNet, "minimal": MinimalNet}
    if net not in nets:
        raise ValueError(f"net must be 'full' or 'minimal', got {net!r}")
    if scalar_optimizer is not None and net != "minimal":
        raise ValueError("scalar_optimizer is for the minimal model's scalars (net='minimal')")
    groups = None if scalar_optimizer is None else {
        k: {"weight_decay": 0.0, **scalar_optimizer} for k in ("beta1", "alpha", "beta2")}
    variants = variants or [{}] * len(seeds)
    if len(variants) != len(seeds):
        raise ValueError(f"need one variant per seed: {len(variants)} variants, {len(seeds)} seeds")
    steps = cfg.steps if steps is None else steps
    batch = cfg.batch if batch is None else batch
    eval_every = cfg.eval_every if eval_every is None else eval_every
    opt = optimizer_args(cfg, optimizer=optimizer, lr=lr)
    device = runtime.device()
    cfgs = [replace(cfg, **v) for v in variants]
    tasks = [make_task(c, runtime.stream("task", s)) for c, s in zip(cfgs, seeds)]
    sets = [{k: _to(v, device) for k, v in eval_sets(t, c, runtime.stream("eval-sets", s)).items()}
            for t, c, s in zip(tasks, cfgs, seeds)]
    models = [nets[net](c, runtime.generator(s)).to(device) for c, s in zip(cfgs, seeds)]

    def sampler(task: Task, c: Config):
        def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            s = sample(task, batch, c, g)
            return s.tokens.to(device), s.target.to(device)
        return draw

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
                row["maps"] = {"att1": a1[0].round(decimals=4).tolist(),
                               "att2": a2[0].round(decimals=4).tolist()}
            out.append(row)
        return {"members": out}

    def run() -> dict:
        return train.train(models, cross_entropy, [sampler(t, c) for t, c in zip(tasks, cfgs)],
                           steps=steps, generators=[runtime.stream("batches", s) for s in seeds],
                           checkpoint_every=eval_every, on_checkpoint=on_checkpoint, desc=desc,
                           log_every=max(1, eval_every // 4), param_groups=groups, **opt)

    def kept() -> dict[str, torch.Tensor]:
        return {f"{c}/{i}/{k}": v for c, snap in enumerate(snapshots) for i, sd in enumerate(snap)
                for k, v in sd.items()}

    if cache_name is None:
        history = run()
        if keep_weights:
            history["extra_state"] = kept()
    else:
        history = train.cached_training("03", cache_name, cfg, models, run, uses=__name__, seeds=list(seeds),
                                        extra_state=kept if keep_weights else None,
                                        **({"keep_weights": True} if keep_weights else {}),
                                        variants=variants, net=net, steps=steps, batch=batch, **opt,
                                        **({} if groups is None else {"scalar_optimizer": dict(scalar_optimizer)}),
                                        **({} if measured is None else {"measured": list(measured)}))
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


# ---------------------------------------------------------------------------------------------
# 5. The phenomenological model: three nested logits
# ---------------------------------------------------------------------------------------------


def pheno_loss(beta1: torch.Tensor, alpha: torch.Tensor, xi: torch.Tensor, N: int,
               L: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, p(correct) and p(some context label) of the phenomenological model (reconstructed).

    With ``s1 = sigmoid(beta1)`` (layer 1 copies the previous item) and
    ``a2 = exp(alpha s1) / (exp(alpha s1) + N - 1)`` (layer 2 finds the matching label), the
    correct label's logit is ``xi a2``, the other ``N - 1`` context labels' ``xi (1 - a2)/(N - 1)``
    and the ``L - N`` absent labels' 0; ``xi`` is how well the read-out separates label vectors.
    The loss is the cross-entropy of the correct label. Broadcasts over its tensor arguments,
    ``L`` included (one value per row of a batch of descents; ``L = N`` has no absent labels).
    """
    L_t = torch.as_tensor(L, dtype=torch.float64)
    if not (1 <= N and bool((L_t >= N).all())):
        raise ValueError(f"need 1 <= N <= L, got N={N}, L={L}")
    s1 = torch.sigmoid(beta1)
    a2 = torch.exp(alpha * s1) / (torch.exp(alpha * s1) + (N - 1))
    correct = xi * a2
    other = xi * (1 - a2) / max(N - 1, 1)
    absent = torch.where(L_t > N, torch.log((L_t - N).clamp_min(1)), torch.tensor(-math.inf, dtype=torch.float64))
    parts = [correct, other + math.log(N - 1) if N > 1 else None,
             absent.to(correct.dtype) if bool((L_t > N).any()) else None]
    log_z = torch.logsumexp(torch.stack(torch.broadcast_tensors(*[p for p in parts if p is not None])), 0)
    loss = log_z - correct
    p_context = torch.exp(torch.logsumexp(torch.stack(torch.broadcast_tensors(
        *[p for p in parts[:2] if p is not None])), 0) - log_z)
    return loss, torch.exp(-loss), p_context


def pheno_gradient(beta1: float, alpha: float, xi: float, N: int, L: int) -> np.ndarray:
    """The gradient ``(dL/dbeta1, dL/dalpha, dL/dxi)`` at one point, in float64."""
    p = torch.tensor([beta1, alpha, xi], dtype=torch.float64, requires_grad=True)
    loss, _, _ = pheno_loss(p[0], p[1], p[2], N, L)
    loss.backward()
    return p.grad.numpy()


def pheno_descent(N: int, L: int, *, steps: int, lr: float,
                  start: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  optimizer: str = "gd") -> dict[str, np.ndarray]:
    """Descent on the phenomenological loss from ``start = (beta1, alpha, xi)``: plain gradient
    descent (``optimizer="gd"``) or Adam (``"adam"``, torch's defaults otherwise), the contrast
    that shows how a per-parameter rescaling of the gradient changes the dynamics.

    Returns arrays over steps ``0..steps``: ``beta1``, ``alpha``, ``xi``, ``loss``, ``p_correct``,
    ``p_context``.
    """
    return pheno_descents(N, [L], steps=steps, lr=lr, start=start, optimizer=optimizer)[0]


def pheno_descents(N: int, Ls: Sequence[int], *, steps: int, lr: float,
                   start: tuple[float, float, float] = (0.0, 0.0, 0.0),
                   optimizer: str = "gd") -> list[dict[str, np.ndarray]]:
    """:func:`pheno_descent` for each ``L`` of ``Ls`` at once, as one batched computation (the
    descents are independent: each row's gradient is its own, and Adam is elementwise)."""
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
    if not Ls:
        raise ValueError("need at least one L")
    L_t = torch.tensor([float(L) for L in Ls], dtype=torch.float64)
    p = torch.tensor([list(start)] * len(Ls), dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([p], lr=lr) if optimizer == "adam" else None
    rows = []
    with runtime.threads(1):                     # a few scalars: threads only add overhead
        for _ in range(steps + 1):
            loss, pc, pctx = pheno_loss(p[:, 0], p[:, 1], p[:, 2], N, L_t)
            rows.append(torch.cat([p.detach(), torch.stack([loss, pc, pctx], 1).detach()], 1))
            (grad,) = torch.autograd.grad(loss.sum(), p)
            if adam is not None:
                p.grad = grad
                adam.step()
                continue
            with torch.no_grad():
                p -= lr * grad
    arr = torch.stack(rows).numpy()              # (steps + 1, len(Ls), 6)
    keys = ["beta1", "alpha", "xi", "loss", "p_correct", "p_context"]
    return [{k: arr[:, j, i] for i, k in enumerate(keys)} for j in range(len(Ls))]


# ---------------------------------------------------------------------------------------------
# 6. Baselines and the step-size calibration
# ---------------------------------------------------------------------------------------------


def context_label_baseline(seqs: Sequences) -> float:
    """Accuracy of guessing a uniformly random context label: the mean share of context
    labels equal to the target (``B / N`` on bursty sequences)."""
    return float((seqs.context_labels == seqs.target[:, None]).float().mean())


def calibration_summary(record: Mapping[str, Any]) -> list[str]:
    """One line per Adam step of a step-size calibration record (``benchmarks/calibrate_induction.py``):
    the range over seeds of the onset, the rise / onset ratio, the linger ratio and the finals."""
    rows = record.get("rows") or []
    if not rows:
        raise ValueError("the calibration record has no rows")

    def span(values: Sequence[float], fmt: str) -> str:
        lo, hi = min(values), max(values)
        return format(lo, fmt) if lo == hi else f"{lo:{fmt}}-{hi:{fmt}}"

    lines = []
    for lr in sorted({r["lr"] for r in rows}):
        rs = [r for r in rows if r["lr"] == lr]
        lines.append(f"Adam {lr:g}, {rs[0]['steps']} steps, {len(rs)} seeds: onset {span([r['onset'] for r in rs], '.0f')}, "
                     f"rise/onset {span([r['rise_ratio'] for r in rs], '.2f')}, linger {span([r['linger'] for r in rs], '.1f')}, "
                     f"plateau share {span([r['plateau_fraction'] for r in rs], '.0%')}; final IC ≥ {min(r['IC'] for r in rs):.3f}, "
                     f"IC2 ≥ {min(r['IC2'] for r in rs):.3f}, IW ≤ {max(r['IW'] for r in rs):.3f}")
    return lines
