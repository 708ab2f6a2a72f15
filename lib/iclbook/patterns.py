"""Li et al. (ICML 2024): a one-layer nonlinear transformer learns binary classification in context.

The data model of the paper (its Section 3, as reconstructed in the book's spec):

* in-domain-relevant (IDR) patterns ``mu_1..mu_M1`` and in-domain-irrelevant (IDI) patterns
  ``nu_1..nu_M2``, mutually orthogonal; an input is ``x = mu_j + kappa * nu_k``;
* a *task* is an ordered pair ``(a, b)`` of IDR patterns: label +1 for inputs of pattern ``a``,
  -1 for pattern ``b``, a random sign for any other pattern;
* a *prompt* stacks ``l`` context tokens ``[x_i; y_i]`` (``y_i = +q`` or ``-q``) and a query
  ``[x_q; 0]``; a fraction ``alpha`` of the contexts carry one of the task's two patterns, so
  about ``alpha / 2`` share the query's pattern;
* out-of-domain (OOD) relevant patterns are combinations of IDR ones with coefficient sum S1.

The model is one softmax-attention head and a ReLU MLP with a fixed read-out ``a``:
``F(P) = a^T relu(W_O sum_i attn_i W_V p_i)``, with attention of the query over the contexts
only; prediction ``sign F``; hinge loss; plain SGD.

Shapes: ``n`` prompts, ``l`` contexts, ``d = d_X + d_Y`` token size, ``m`` neurons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from iclbook import runtime, train

# ---------------------------------------------------------------------------------------------
# 0. Configurations
# ---------------------------------------------------------------------------------------------


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
    n_test: int = 4000  # test prompts per evaluation point
    n_ood_relevant: int = 3  # M1'
    train_split: str = "balanced"  # "balanced" (every pattern + and - equally often) or "uneven"
    n_ood_irrelevant: int = 8
    seeds: int = 4  # seeds of the main run
    sweep_seeds: int = 5  # seeds per alpha in the sample-complexity sweep
    sweep_steps: int = 2500
    sweep_alphas: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)  # training alphas of the sweep
    lr_control: bool = True  # retrain the sweep's extremes at half the step (off at smoke: time)
    n_baseline: int = 300  # prompts per point of the classical baselines
    gpt_steps: int = 1000  # multi-layer check
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_width: int = 64
    gpt_trend_checks: bool = True  # False at smoke: too few steps to learn; only the code path runs

    @property
    def d_X(self) -> int:
        return self.M1 + self.M2

    @property
    def d(self) -> int:
        return self.d_X + self.d_Y


CONFIGS: dict[str, Config] = {
    "smoke": Config(steps=1100, n_test=1000, seeds=2, sweep_seeds=2, sweep_steps=2000, sweep_alphas=(0.4, 1.0),
                    n_baseline=40, lr_control=False,
                    gpt_steps=300, gpt_width=32, gpt_trend_checks=False),
    "book": Config(),
    "paper": Config(steps=4000, n_test=20000, seeds=5, sweep_seeds=8, sweep_steps=3000, n_baseline=1000,
                    gpt_steps=20000, gpt_layers=3, gpt_heads=2, gpt_width=128),
}


#: Chapter 1's named random streams (:class:`iclbook.runtime.Streams`), offsets from the chapter's
#: seed: what each draw is for. Several cells reuse one stream on purpose: the out-of-domain
#: sweeps share their domain ("ood-sweep-domain") so their numbers are comparable.
STREAMS = {
    "prompt-figure": runtime.Stream(0),  # the one prompt drawn in the data figure
    "untrained-init": runtime.Stream(0),  # the untrained model of the context-length check
    "bootstrap": runtime.Stream(0, kind="numpy"),  # resampling seeds for the slope's interval
    "ood-domain": runtime.Stream(1),  # the out-of-domain patterns the progress measures use
    "id-val": runtime.Stream(2),  # in-domain prompts read at every checkpoint
    "ood-val": runtime.Stream(3),  # out-of-domain prompts read at every checkpoint
    "id-test": runtime.Stream(4),  # Theorem 1's test prompts
    "ood-sweep-domain": runtime.Stream(10),  # the domain of the S1, length, baseline and GPT checks
    "ood-sweep-prompts": runtime.Stream(11),  # prompts of the S1 sweep
    "length-prompts": runtime.Stream(12),  # prompts of the context-length sweep
    "alpha-sweep-prompts": runtime.Stream(20),  # validation prompts of the alpha sweep
    "prune-domain": runtime.Stream(30),
    "prune-prompts": runtime.Stream(31),
    "lucky-prompts": runtime.Stream(32),  # prompts that read the initial activity of each neuron
    "prune-random": runtime.Stream(40, width=10),  # random pruning masks, one per draw
    "baseline-prompts": runtime.Stream(50, width=50),  # classical baselines: one per context length
    "sweep-members": runtime.Stream(100, width=100, scale=1000),  # the alpha sweep's models
}

# ---------------------------------------------------------------------------------------------
# 1. Patterns, tasks and prompts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """Relevant patterns ``(M, d_X)``, irrelevant patterns ``(K, d_X)`` and tasks ``(T, 2)``
    (ordered pairs of relevant-pattern indices: +1 for the first, -1 for the second)."""

    relevant: torch.Tensor
    irrelevant: torch.Tensor
    tasks: torch.Tensor


def all_tasks(M: int) -> torch.Tensor:
    """All ``M (M - 1)`` ordered pairs ``(a, b)``, ``a != b``."""
    return torch.tensor([(a, b) for a in range(M) for b in range(M) if a != b])


def training_tasks(M: int, kind: str = "balanced") -> torch.Tensor:
    """The training tasks, a subset of the ordered pairs that covers every pattern as both the +
    and the - pattern, with at least the theorems' share ``(M - 1)^(-1/2)`` of all tasks.

    ``"balanced"``: the pairs ``(j, j + s mod M)`` for every ``j`` and the shifts
    ``s = 1..ceil(sqrt(M - 1))``, so every pattern is the + pattern and the - pattern of exactly
    that many tasks (18 of 30 at ``M = 6``). ``"uneven"``: the shifts 1 and 2 for every ``j`` and
    the shift 3 for the first ``M // 2`` patterns only (15 of 30 at ``M = 6``: patterns
    ``0..2`` are the + pattern three times, ``3..5`` twice), kept as the control of chapter 1's
    Proposition 2 check; below the theorems' share (``M >= 7``) it is an error."""
    if M < 4:
        raise ValueError(f"the training split needs M1 >= 4 patterns, got {M}")
    if kind == "balanced":
        shifts = range(1, math.ceil(math.sqrt(M - 1)) + 1)
        pairs = [(j, (j + s) % M) for s in shifts for j in range(M)]
    elif kind == "uneven":
        pairs = [(j, (j + s) % M) for s in (1, 2) for j in range(M)]
        pairs += [(j, (j + 3) % M) for j in range(M // 2)]
    else:
        raise ValueError(f"kind must be 'balanced' or 'uneven', got {kind!r}")
    chosen = sorted(set(pairs))
    share, need = len(chosen) / (M * (M - 1)), (M - 1) ** -0.5
    if share < need:
        raise ValueError(f"the training split covers {len(chosen)} of {M * (M - 1)} tasks ({share:.2f}), "
                         f"below the theorems' (M1 - 1)^(-1/2) = {need:.2f} for M1 = {M}")
    return torch.tensor(chosen)


def in_domain(cfg: Config, split: str = "train") -> Domain:
    """IDR patterns ``beta * e_1..e_M1``, IDI patterns ``e_{M1+1}..e_{M1+M2}`` and the task split
    ``"train"``, ``"test"`` (the unseen tasks) or ``"all"``."""
    if cfg.M1 < 3:
        raise ValueError(f"M1 must be >= 3 (a task and at least one other pattern), got {cfg.M1}")
    eye = torch.eye(cfg.d_X)
    tasks = all_tasks(cfg.M1)
    if split != "all":
        train_set = {tuple(t) for t in training_tasks(cfg.M1, cfg.train_split).tolist()}
        keep = [(tuple(t) in train_set) == (split == "train") for t in tasks.tolist()]
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        tasks = tasks[torch.tensor(keep)]
    return Domain(cfg.beta * eye[: cfg.M1], eye[cfg.M1:], tasks)


CONSTRUCTIONS = ("pair", "single", "unit", "mixed")


def ood_coefficients(S1: float, construction: str = "pair") -> tuple[float, float]:
    """The two coefficients ``(c1, c2)`` of an ODR pattern ``c1 mu_{2j-1} + c2 mu_{2j}``; they
    sum to ``S1`` in every construction, which differ in the pattern's norm
    ``beta * sqrt(c1^2 + c2^2)``:

    * ``"pair"``: ``(S1/2, S1/2)``, norm ``S1 / sqrt(2)`` (the chapter's main construction);
    * ``"single"``: ``(S1, 0)``, a scaled IDR pattern, norm ``S1``;
    * ``"unit"``: the pair with sum ``S1`` and norm 1, ``((S1 +- sqrt(2 - S1^2)) / 2)`` (mixed
      signs below ``S1 = 1``; needs ``S1 <= sqrt(2)``);
    * ``"mixed"``: ``(S1 + 1, -1)``, mixed signs and a norm above 1.
    """
    if construction == "pair":
        return S1 / 2, S1 / 2
    if construction == "single":
        return S1, 0.0
    if construction == "unit":
        if S1 > math.sqrt(2):
            raise ValueError(f"a unit-norm pair of coefficients needs S1 <= sqrt(2), got {S1}")
        r = math.sqrt(2 - S1**2)
        return (S1 + r) / 2, (S1 - r) / 2
    if construction == "mixed":
        return S1 + 1.0, -1.0
    raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")


def out_of_domain(cfg: Config, S1: float, generator: torch.Generator, construction: str = "pair") -> Domain:
    """OOD patterns ``mu'_j = c1 mu_{2j-1} + c2 mu_{2j}`` (combinations of IDR patterns whose
    coefficients sum to S1; :func:`ood_coefficients` gives ``c1, c2`` for each construction) and
    random unit-norm combinations of the IDI patterns; all tasks on the ODR patterns."""
    if S1 <= 0:
        raise ValueError(f"S1 must be > 0, got {S1}")
    if 2 * cfg.n_ood_relevant > cfg.M1:
        raise ValueError("need M1 >= 2 * M1' to build the OOD patterns from pairs")
    c1, c2 = ood_coefficients(S1, construction)
    base = in_domain(cfg, "all")
    relevant = c1 * base.relevant[0::2][: cfg.n_ood_relevant] + c2 * base.relevant[1::2][: cfg.n_ood_relevant]
    coef = torch.randn(cfg.n_ood_irrelevant, cfg.M2, generator=generator)
    irrelevant = (coef / coef.norm(dim=1, keepdim=True)) @ base.irrelevant
    return Domain(relevant, irrelevant, all_tasks(cfg.n_ood_relevant))


def no_match_floor(alpha: float, l: int) -> float:
    """The error of an oracle that knows which contexts share the query's relevant pattern and
    copies their label: it errs only on prompts where none does, at chance, so its expected error
    is ``0.5 (1 - alpha/2)^l`` (each context matches with probability ``alpha / 2``). No rule that
    reads the label from the matching contexts can do better on average."""
    if not 0.0 <= alpha <= 1.0 or l < 0:
        raise ValueError(f"need 0 <= alpha <= 1 and l >= 0, got {alpha}, {l}")
    return 0.5 * (1 - alpha / 2) ** l


@dataclass
class Prompts:
    """A batch of prompts and what generated them."""

    tokens: torch.Tensor  # (n, l + 1, d): contexts [x_i; y_i], then the query [x_q; 0]
    target: torch.Tensor  # (n,) the query's label z, +1 or -1
    same: torch.Tensor  # (n, l) bool: context i carries the query's relevant pattern
    labels: torch.Tensor  # (n, l) the contexts' labels, +1 or -1

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens, self.target


def sample_prompts(domain: Domain, n: int, *, alpha: float, l: int, cfg: Config,
                   generator: torch.Generator) -> Prompts:
    """``n`` prompts of ``l`` contexts from ``domain``'s tasks (uniformly), as in the paper."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if n < 1 or l < 1:
        raise ValueError(f"need n >= 1 and l >= 1, got {n}, {l}")
    M = domain.relevant.shape[0]
    if alpha < 1 and M < 3:
        raise ValueError("alpha < 1 needs at least one pattern outside the task (M >= 3)")
    g = generator
    t = torch.randint(len(domain.tasks), (n,), generator=g)
    a, b = domain.tasks[t, 0], domain.tasks[t, 1]
    z = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    query_pattern = torch.where(z > 0, a, b)

    in_task = torch.rand(n, l, generator=g) < alpha
    pick_a = torch.rand(n, l, generator=g) < 0.5
    other = torch.randint(0, max(M - 2, 1), (n, l), generator=g)  # skip a and b
    lo, hi = torch.minimum(a, b)[:, None], torch.maximum(a, b)[:, None]
    other = other + (other >= lo).long()
    other = other + (other >= hi).long()
    pattern = torch.where(in_task, torch.where(pick_a, a[:, None], b[:, None]), other)
    random_sign = torch.randint(0, 2, (n, l), generator=g) * 2 - 1
    labels = torch.where(pattern == a[:, None], 1, torch.where(pattern == b[:, None], -1, random_sign))

    # inputs mu_j + kappa nu_k of the contexts and the query, drawn together (one gather)
    every = torch.cat([pattern, query_pattern[:, None]], dim=1)  # (n, l + 1)
    k = torch.randint(domain.irrelevant.shape[0], every.shape, generator=g)
    kappa = (torch.rand(every.shape, generator=g) * 2 - 1) * cfg.kappa
    x = domain.relevant[every] + kappa.unsqueeze(-1) * domain.irrelevant[k]
    y = torch.zeros(n, l + 1, cfg.d_Y)  # label embedding +-q with q = e_1; the query's is 0
    y[:, :l, 0] = labels.float()
    return Prompts(torch.cat([x, y], dim=-1), z.float(), pattern == query_pattern[:, None], labels)


# ---------------------------------------------------------------------------------------------
# 2. The one-layer transformer
# ---------------------------------------------------------------------------------------------


class OneLayerICL(nn.Module):
    """``F(P) = a^T relu(W_O sum_i attn_i W_V p_i)``, ``attn = softmax_i((W_K p_i)^T W_Q p_q)``.

    The query attends to the ``l`` contexts only. ``a`` is fixed at ``+-1/m`` (half each), as in
    the analysis. :meth:`internals` returns every activation by name (:data:`INTERNALS`);
    :meth:`neuron_rows` gives the rows of ``W_O W_V``.
    """

    #: What :meth:`internals` returns (:mod:`iclbook.internals`).
    INTERNALS = {
        "attention": "(n, l) the query's attention over the contexts",
        "mixed": "(n, d) the attention-weighted sum of the context tokens",
        "hidden": "(n, m) the neurons' pre-activations W_O W_V mixed",
        "active": "(n, m) relu(hidden)",
        "output": "(n,) F = a . active, the prediction's margin",
    }

    def __init__(self, cfg: Config, seed: int):
        super().__init__()
        d, m = cfg.d, cfg.m
        gen = runtime.generator(seed)
        self.W_Q = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_K = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_V = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_O = nn.Parameter(cfg.init_out * torch.randn(m, d, generator=gen))
        self.register_buffer("a", torch.cat([torch.ones(m // 2), -torch.ones(m - m // 2)]) / m)

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of the query over the contexts, ``(n, l)``. The score
        ``(W_K p_i)^T W_Q p_q`` is computed as ``p_i^T (W_K^T W_Q p_q)``: one matrix product per
        prompt instead of one per context (about four times faster to train; same function)."""
        qk = (tokens[:, -1] @ self.W_Q.T) @ self.W_K  # (n, d): W_K^T W_Q p_q
        return torch.softmax(torch.einsum("nld,nd->nl", tokens[:, :-1], qk), dim=-1)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the ``m`` neurons, ``(n, m)``: ``W_O W_V sum_i attn_i p_i`` (the
        attention-weighted sum of the tokens first, then the two matrices)."""
        return self._read(tokens, self.attention(tokens))[1]

    def _read(self, tokens: torch.Tensor, att: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention-weighted context ``(n, d)`` and the neurons' pre-activations ``(n, m)``."""
        mixed = torch.einsum("nl,nld->nd", att, tokens[:, :-1])
        return mixed, (mixed @ self.W_V.T) @ self.W_O.T

    def forward(self, tokens: torch.Tensor, neuron_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``F`` for each prompt, ``(n,)``; ``neuron_mask`` ``(m,)`` zeroes pruned neurons."""
        act = torch.relu(self.hidden(tokens))
        a = self.a if neuron_mask is None else self.a * neuron_mask
        return act @ a

    def internals(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of :data:`INTERNALS` on ``tokens`` ``(n, l + 1, d)``, from one pass."""
        att = self.attention(tokens)
        mixed, hidden = self._read(tokens, att)
        active = torch.relu(hidden)
        return {"attention": att, "mixed": mixed, "hidden": hidden, "active": active, "output": active @ self.a}

    def neuron_rows(self) -> torch.Tensor:
        """Rows of ``W_O W_V``, ``(m, d)``: each neuron's read of the attention output."""
        return self.W_O @ self.W_V


def hinge(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The paper's loss ``mean(max(0, 1 - z F))``."""
    tokens, z = batch
    return torch.clamp(1 - z * model(tokens), min=0).mean()


@torch.no_grad()
def error(model: OneLayerICL, prompts: Prompts) -> float:
    """Classification error ``P(sign F != z)`` alone (what :func:`evaluate` reports, without
    the attention pass): for evaluations inside a training loop."""
    return float((torch.sign(model(prompts.tokens)) != prompts.target).float().mean())


@torch.no_grad()
def evaluate(model: OneLayerICL, prompts: Prompts, neuron_mask: torch.Tensor | None = None) -> dict:
    """Classification error ``P(sign F != z)`` (``F = 0`` counts as wrong), hinge loss, and the
    attention mass on contexts that share the query's relevant pattern."""
    F = model(prompts.tokens, neuron_mask)
    att = model.attention(prompts.tokens)
    return {
        "error": float((torch.sign(F) != prompts.target).float().mean()),
        "hinge": float(torch.clamp(1 - prompts.target * F, min=0).mean()),
        "same_attention": float((att * prompts.same).sum(-1).mean()),
    }


def ood_sweep(models: Sequence[torch.nn.Module], cfg: Config, S1_values: Sequence[float], *,
              domain_generator: Callable[[], torch.Generator], prompt_generator: Callable[[], torch.Generator],
              construction: str = "pair", alpha: float = 0.8, n: int | None = None) -> np.ndarray:
    """``(models, S1)`` error on out-of-domain prompts (Theorem 2): for each ``S1``, patterns of
    that construction, then ``n`` prompts (default ``cfg.n_test``) at ``alpha`` and the training
    length. ``domain_generator()`` and ``prompt_generator()`` return fresh generators, so every
    ``S1`` (and every model: the one-layer ones and the GPT) sees the same draws."""
    out = np.zeros((len(models), len(S1_values)))
    for j, S1 in enumerate(S1_values):
        dom = out_of_domain(cfg, S1, domain_generator(), construction)
        prompts = sample_prompts(dom, n or cfg.n_test, alpha=alpha, l=cfg.l_train, cfg=cfg, generator=prompt_generator())
        out[:, j] = [error(m, prompts) for m in models]
    return out


def length_sweep(models: Sequence[torch.nn.Module], domain: Domain, cfg: Config, alphas: Sequence[float],
                 lengths: Sequence[int], *, prompt_generator: Callable[[], torch.Generator],
                 n: int | None = None) -> np.ndarray:
    """``(alphas, models, lengths)`` error against the context length ``l`` (Theorems 1-2's
    ``l = Omega(1 / alpha')``): ``n`` prompts (default ``cfg.n_test``) of ``domain`` per point, each
    from a fresh ``prompt_generator()``."""
    out = np.zeros((len(alphas), len(models), len(lengths)))
    for i, a in enumerate(alphas):
        for k, l in enumerate(lengths):
            prompts = sample_prompts(domain, n or cfg.n_test, alpha=a, l=int(l), cfg=cfg, generator=prompt_generator())
            out[i, :, k] = [error(m, prompts) for m in models]
    return out


# ---------------------------------------------------------------------------------------------
# 3. Mechanism
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def qk_projections(model: OneLayerICL, prompts: Prompts, domain: Domain, cfg: Config) -> dict:
    """Mean norms of ``W_Q p_q`` and ``W_K p_i`` and of their components along the query's
    relevant pattern (Prop. 1: the growth is along the pattern)."""
    tokens = prompts.tokens
    q, k = tokens[:, -1] @ model.W_Q.T, tokens[:, :-1] @ model.W_K.T
    # the query's pattern direction, embedded in token space
    xq = tokens[:, -1, : cfg.d_X]
    sims = xq @ domain.relevant.T  # (n, M)
    direction = torch.zeros_like(tokens[:, -1])
    direction[:, : cfg.d_X] = domain.relevant[sims.argmax(-1)]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    same_k = (k * direction[:, None]).sum(-1)[prompts.same]
    return {
        "q_norm": float(q.norm(dim=-1).mean()),
        "k_norm": float(k.norm(dim=-1)[prompts.same].mean()),
        "q_on_pattern": float((q * direction).sum(-1).mean()),
        "k_on_pattern": float(same_k.mean()),
    }


@torch.no_grad()
def qk_gains(model: OneLayerICL, cfg: Config) -> dict:
    """How much ``W_Q`` and ``W_K`` amplify the relevant patterns against the irrelevant ones:
    the mean of ``||W mu_j|| / ||mu_j||`` and of ``||W nu_k||`` over the in-domain patterns (both
    ``init_attn`` at initialisation). Prop. 1's "project onto the pattern, filter the noise"."""
    dom = in_domain(cfg, "all")
    pad = torch.zeros(cfg.d_Y)

    def gain(W: torch.Tensor, vectors: torch.Tensor) -> float:
        embedded = torch.cat([vectors, pad.expand(len(vectors), -1)], dim=1)
        return float(((embedded @ W.T).norm(dim=1) / vectors.norm(dim=1)).mean())

    return {"q_gain_pattern": gain(model.W_Q, dom.relevant), "q_gain_noise": gain(model.W_Q, dom.irrelevant),
            "k_gain_pattern": gain(model.W_K, dom.relevant), "k_gain_noise": gain(model.W_K, dom.irrelevant)}


def angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle in radians between the rows of ``u`` and the vector ``v``."""
    cos = (u @ v) / (u.norm(dim=-1) * v.norm()).clamp_min(1e-30)
    return torch.arccos(cos.clamp(-1, 1))


@torch.no_grad()
def neuron_geometry(model: OneLayerICL, cfg: Config) -> dict:
    """Prop. 2: for each row of ``W_O W_V``, the magnitude and angle of its label part to ``q``
    and of its feature part to the mean IDR pattern, with the sign of its read-out ``a_i``."""
    rows = model.neuron_rows()
    feat, lab = rows[:, : cfg.d_X], rows[:, cfg.d_X:]
    q = torch.zeros(cfg.d_Y)
    q[0] = 1.0
    mu_bar = in_domain(cfg, "all").relevant.mean(0)
    return {
        "label_norm": lab.norm(dim=-1), "label_angle": angle(lab, q),
        "feature_norm": feat.norm(dim=-1), "feature_angle": angle(feat, mu_bar),
        "positive": model.a > 0, "row_norm": model.W_O.norm(dim=-1),
    }


@torch.no_grad()
def progress_measures(model: OneLayerICL, cfg: Config, id_val: Prompts, ood_val: Prompts,
                      ood_domain: Domain) -> dict:
    """Everything the chapter follows during training, as JSON-able values: in-domain error and
    attention on unseen tasks, OOD attention, the Q/K projections, and each neuron's geometry."""
    ev, ood = evaluate(model, id_val), evaluate(model, ood_val)
    geo = neuron_geometry(model, cfg)
    out = {"id_error": ev["error"], "id_hinge": ev["hinge"], "id_attention": ev["same_attention"],
           "ood_error": ood["error"], "ood_attention": ood["same_attention"]}
    out.update(qk_projections(model, ood_val, ood_domain, cfg))
    out.update(qk_gains(model, cfg))
    out.update({k: v.tolist() for k, v in geo.items() if k != "positive"})
    return out


# ---------------------------------------------------------------------------------------------
# 4. Pruning
# ---------------------------------------------------------------------------------------------


def pruning_mask(row_norms: torch.Tensor, rate: float, how: str, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Mask ``(m,)`` keeping ``1 - rate`` of the neurons: ``how`` is ``"magnitude"`` (drop the
    smallest rows of ``W_O``), ``"largest"`` (drop the largest first) or ``"random"``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pruning rate must lie in [0, 1], got {rate}")
    m = row_norms.shape[0]
    k = int(round(rate * m))
    if how == "magnitude":
        order = torch.argsort(row_norms)
    elif how == "largest":
        order = torch.argsort(row_norms, descending=True)
    elif how == "random":
        if generator is None:
            raise ValueError("random pruning needs a generator")
        order = torch.randperm(m, generator=generator)
    else:
        raise ValueError(f"how must be 'magnitude', 'largest' or 'random', got {how!r}")
    mask = torch.ones(m)
    mask[order[:k]] = 0.0
    return mask


@torch.no_grad()
def pruning_sweep(models: Sequence[OneLayerICL], row_norms: Sequence[torch.Tensor], prompts: Prompts,
                  rates: Sequence[float], *, hows: Sequence[str] = ("magnitude", "random", "largest"),
                  random_draws: int = 5, mask_generator: Callable[[int], torch.Generator] | None = None
                  ) -> dict[str, np.ndarray]:
    """Hinge loss and error after pruning each model's neurons at each rate (Theorem 3, Fig. 23):
    ``{how: (2, models, rates)}``, index 0 the hinge loss, 1 the error. ``row_norms[s]`` are model
    ``s``'s row norms of ``W_O``; ``"random"`` averages ``random_draws`` masks, draw ``d`` from
    ``mask_generator(d)`` (the same draws for every model and rate)."""
    if len(models) != len(row_norms):
        raise ValueError(f"need one set of row norms per model: {len(row_norms)} for {len(models)} models")
    if "random" in hows and mask_generator is None:
        raise ValueError("random pruning needs mask_generator(d) -> torch.Generator")
    out = {how: np.zeros((2, len(models), len(rates))) for how in hows}
    for s, (m, norms) in enumerate(zip(models, row_norms)):
        for k, r in enumerate(rates):
            for how in hows:
                draws = random_draws if how == "random" else 1
                res = [evaluate(m, prompts, pruning_mask(norms, r, how, mask_generator(d) if how == "random" else None))
                       for d in range(draws)]
                out[how][0, s, k] = np.mean([x["hinge"] for x in res])
                out[how][1, s, k] = np.mean([x["error"] for x in res])
    return out


def norm_split(row_norms: torch.Tensor) -> tuple[int, float]:
    """Split the norms into a small and a large group (Otsu's threshold on the log-norms: the
    split that maximises the between-group variance). Returns ``(size of the small group,
    median of the large group / median of the small group)``; the ratio is near 1 for a single
    group and large for two well-separated ones."""
    x = torch.sort(torch.log(row_norms.double())).values
    n = len(x)
    if n < 2:
        raise ValueError("need at least two norms to split")
    best, k_best = -1.0, 1
    for k in range(1, n):
        lo, hi = x[:k], x[k:]
        between = k * (n - k) * float(lo.mean() - hi.mean()) ** 2
        if between > best:
            best, k_best = between, k
    ratio = float(torch.exp(x[k_best:].median() - x[:k_best].median()))
    return k_best, ratio


@torch.no_grad()
def initial_activity(cfg: Config, seed: int, prompts: Prompts) -> torch.Tensor:
    """Theorem 3's "lucky" neurons: for the model of ``seed`` *at initialisation*, the fraction
    of ``prompts`` on which each neuron's ReLU is active, ``(m,)``."""
    return (OneLayerICL(cfg, seed=seed).hidden(prompts.tokens) > 0).float().mean(0)


def separation_auc(scores: torch.Tensor | np.ndarray, in_group: torch.Tensor | np.ndarray) -> float:
    """The probability that a random member of the group scores higher than a random non-member
    (ties count half): 1 for a perfect separation, 0.5 for none (the Mann-Whitney AUC)."""
    s, g = np.asarray(scores, dtype=float), np.asarray(in_group, dtype=bool)
    a, b = s[g], s[~g]
    if len(a) == 0 or len(b) == 0:
        raise ValueError("need members both inside and outside the group")
    diff = a[:, None] - b[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


# ---------------------------------------------------------------------------------------------
# 5. Classical per-prompt classifiers (the authors' comparison)
# ---------------------------------------------------------------------------------------------


def classical_classifiers() -> dict:
    """scikit-learn classifiers fitted on one prompt's ``l`` context pairs: logistic regression,
    1-NN, 3-NN, an RBF-kernel SVM and a linear SVM (default hyperparameters)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {
        "logistic regression": lambda: LogisticRegression(),
        "1-NN": lambda: KNeighborsClassifier(n_neighbors=1),
        "3-NN": lambda: KNeighborsClassifier(n_neighbors=3),
        "SVM (RBF)": lambda: SVC(kernel="rbf"),
        "SVM (linear)": lambda: SVC(kernel="linear"),
    }


def knn_predict(x: np.ndarray, y: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """k-nearest-neighbour labels for many prompts at once: ``x`` ``(n, l, d)`` contexts, ``y``
    ``(n, l)`` labels in ``{-1, +1}``, ``xq`` ``(n, d)`` queries. Euclidean distance, a majority
    vote of the ``min(k, l)`` nearest, a tied vote read as -1 (the smaller class, as
    scikit-learn's ``KNeighborsClassifier`` does); a test checks it against scikit-learn."""
    if k < 1:
        raise ValueError(f"need k >= 1, got {k}")
    k = min(k, x.shape[1])
    d2 = ((x - xq[:, None, :]) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    votes = np.take_along_axis(y, nearest, axis=1).sum(1)
    return np.where(votes > 0, 1, -1)


def _fit_predict(make, x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """One classifier fitted per prompt of a chunk; a one-class context predicts its class."""
    pred = np.empty(len(y), dtype=y.dtype)
    for i in range(len(y)):
        if (y[i] == y[i, 0]).all():
            pred[i] = y[i, 0]
            continue
        clf = make()
        if hasattr(clf, "n_neighbors"):
            clf.set_params(n_neighbors=min(clf.n_neighbors, len(y[i])))
        pred[i] = clf.fit(x[i], y[i]).predict(xq[i: i + 1])[0]
    return pred


def classical_errors(prompts: Prompts, cfg: Config, classifiers: dict | None = None, n_jobs: int = 2
                     ) -> dict[str, float]:
    """Error of each classifier fitted per prompt on the context pairs ``(x_i, label_i)`` and
    applied to the query. A context with one label class only predicts that class; k-NN with
    fewer than k examples uses all of them. The default 1-NN and 3-NN run vectorised over the
    prompts (:func:`knn_predict`, the same predictions as scikit-learn's, far faster); the other
    fits are spread over ``n_jobs`` processes (joblib), which changes nothing but the time."""
    from joblib import Parallel, delayed

    vectorised = {"1-NN": 1, "3-NN": 3} if classifiers is None else {}
    classifiers = classifiers or classical_classifiers()
    x = prompts.tokens[:, :-1, : cfg.d_X].double().numpy()
    xq = prompts.tokens[:, -1, : cfg.d_X].double().numpy()
    y = prompts.labels.numpy()
    z = prompts.target.numpy()
    one_class = (y == y[:, :1]).all(1)
    chunks = np.array_split(np.arange(len(z)), max(1, min(n_jobs, len(z))))
    pool = Parallel(n_jobs=len(chunks)) if len(chunks) > 1 else None
    errors = {}
    for name, make in classifiers.items():
        if name in vectorised:
            pred = np.where(one_class, y[:, 0], knn_predict(x, y, xq, vectorised[name]))
        elif pool is None:
            pred = _fit_predict(make, x, y, xq)
        else:
            pred = np.concatenate(pool(delayed(_fit_predict)(make, x[c], y[c], xq[c]) for c in chunks))
        errors[name] = float((pred != z).mean())
    return errors


# ---------------------------------------------------------------------------------------------
# 6. A small multi-layer transformer (the paper's GPT-2 check, trained from scratch)
# ---------------------------------------------------------------------------------------------


class SmallGPT(nn.Module):
    """A pre-LN causal transformer (``torch.nn.TransformerEncoder``) on the same stacked tokens:
    a linear read-in, ``layers`` blocks of ``heads`` heads, a scalar read-out at the query.
    No positional encoding: the query is the last token and the contexts are exchangeable."""

    #: What :meth:`internals` returns (:mod:`iclbook.internals`); ``T = l + 1`` tokens.
    INTERNALS = {
        "embedded": "(n, T, width) the read-in tokens",
        "blocks": "(layers, n, T, width) the residual stream after each block",
        "final": "(n, width) the normed stream at the query, what the read-out reads",
        "output": "(n,) F, the prediction's margin",
    }

    def __init__(self, cfg: Config, seed: int, layers: int | None = None, heads: int | None = None,
                 width: int | None = None):
        super().__init__()
        layers, heads, width = layers or cfg.gpt_layers, heads or cfg.gpt_heads, width or cfg.gpt_width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.read_in = nn.Linear(cfg.d, width)
            block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
            self.read_out = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.read_in(tokens)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], dtype=h.dtype)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.read_out(self.norm(h[:, -1])).squeeze(-1)

    def internals(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of :data:`INTERNALS` on ``tokens``: the blocks run one by one (the
        encoder's own loop, unrolled), the same function as :meth:`forward` to float rounding."""
        h = embedded = self.read_in(tokens)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], dtype=h.dtype)
        states = []
        for layer in self.blocks.layers:
            h = layer(h, src_mask=mask, is_causal=True)
            states.append(h)
        final = self.norm(h[:, -1])
        return {"embedded": embedded, "blocks": torch.stack(states), "final": final,
                "output": self.read_out(final).squeeze(-1)}


def train_gpt(cfg: Config, seeds: list[int], *, steps: int | None = None, lr: float = 1e-3,
              desc: str = "multi-layer") -> tuple[list[SmallGPT], dict]:
    """Train :class:`SmallGPT` models (one per seed, as one ensemble) with Adam on hinge loss and
    a cosine learning-rate decay, on the same training tasks and prompts as the one-layer model;
    cached. (At a constant rate, Adam on the hinge loss keeps jumping once most margins are met:
    the rare violators' gradients are rescaled to full size.)"""
    steps = cfg.gpt_steps if steps is None else steps
    domain = in_domain(cfg, "train")
    models = [SmallGPT(cfg, seed=s) for s in seeds]

    def sample(g):
        return sample_prompts(domain, cfg.batch, alpha=cfg.alpha, l=cfg.l_train, cfg=cfg, generator=g).batch()

    def run() -> dict:
        return train.train(models, hinge, sample, steps=steps, lr=lr, optimizer="adam", schedule="cosine",
                           generators=[runtime.stream("gpt-batches", s) for s in seeds], desc=desc)

    history = train.cached_training("01", "gpt", cfg, models, run, uses=__name__, seeds=list(seeds), steps=steps, lr=lr)
    return models, history


# ---------------------------------------------------------------------------------------------
# 7. Training
# ---------------------------------------------------------------------------------------------


def train_models(cfg: Config, seeds: list[int], alphas: list[float] | None = None, *,
                 steps: int | None = None, on_checkpoint=None, cache_name: str | None = None,
                 desc: str = "one-layer ICL") -> tuple[list[OneLayerICL], dict]:
    """Train one model per (seed, alpha) on the training tasks, as one batched ensemble.

    ``alphas`` gives each member its training alpha (default ``cfg.alpha`` for all).
    ``on_checkpoint(step, members) -> dict`` is called every ``cfg.checkpoint_every`` steps.
    With ``cache_name``, weights and history go through the weight cache under that name (the
    name must change whenever ``on_checkpoint`` computes something else).
    """
    alphas = alphas or [cfg.alpha] * len(seeds)
    if len(alphas) != len(seeds):
        raise ValueError("need one alpha per seed")
    steps = cfg.steps if steps is None else steps
    domain = in_domain(cfg, "train")
    models = [OneLayerICL(cfg, seed=s) for s in seeds]

    def sampler(alpha: float):
        return lambda g: sample_prompts(domain, cfg.batch, alpha=alpha, l=cfg.l_train, cfg=cfg,
                                        generator=g).batch()

    def run() -> dict:
        return train.train(
            models, hinge, [sampler(a) for a in alphas], steps=steps, lr=cfg.lr, optimizer="sgd",
            generators=[runtime.stream("batches", s) for s in seeds],
            checkpoint_every=cfg.checkpoint_every if on_checkpoint is not None else None,
            on_checkpoint=on_checkpoint, desc=desc)

    if cache_name is None:
        history = run()
        history["cached"] = False
        return models, history
    history = train.cached_training("01", cache_name, cfg, models, run, uses=__name__, seeds=list(seeds),
                                    alphas=list(alphas), steps=steps)
    return models, history


