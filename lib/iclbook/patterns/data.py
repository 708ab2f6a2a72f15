"""Chapter 1's data: the patterns, the tasks and their split, the out-of-domain constructions and
the prompts (Li et al. 2024, Section 3, as reconstructed in the book's spec).

* in-domain-relevant (IDR) patterns ``mu_1..mu_M1`` and in-domain-irrelevant (IDI) patterns
  ``nu_1..nu_M2``, mutually orthogonal; an input is ``x = mu_j + kappa * nu_k``;
* a *task* is an ordered pair ``(a, b)`` of IDR patterns: label +1 for inputs of pattern ``a``,
  -1 for pattern ``b``, a random sign for any other pattern;
* a *prompt* stacks ``l`` context tokens ``[x_i; y_i]`` (``y_i = +q`` or ``-q``) and a query
  ``[x_q; 0]``; a fraction ``alpha`` of the contexts carry one of the task's two patterns, so
  about ``alpha / 2`` share the query's pattern;
* out-of-domain (OOD) relevant patterns are combinations of IDR ones with coefficient sum S1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iclbook.patterns.config import Config


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
        raise ValueError(
            f"the training split covers {len(chosen)} of {M * (M - 1)} tasks ({share:.2f}), "
            f"below the theorems' (M1 - 1)^(-1/2) = {need:.2f} for M1 = {M}"
        )
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
    return Domain(cfg.beta * eye[: cfg.M1], eye[cfg.M1 :], tasks)


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


def sample_prompts(domain: Domain, n: int, *, alpha: float, l: int, cfg: Config, generator: torch.Generator) -> Prompts:
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
