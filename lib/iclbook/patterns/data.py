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
from collections.abc import Sequence
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
    Proposition 2 check; below the theorems' share (``M >= 7``) it is an error. ``"sparse"``: the
    shift 1 alone (``M`` of ``M (M - 1)`` tasks, 0.2 at ``M = 6``), every pattern once + and once
    -, *below* the theorems' share on purpose: chapter 1's control of Theorem 1's task-fraction
    condition."""
    if M < 4:
        raise ValueError(f"the training split needs M1 >= 4 patterns, got {M}")
    if kind == "balanced":
        shifts = range(1, math.ceil(math.sqrt(M - 1)) + 1)
        pairs = [(j, (j + s) % M) for s in shifts for j in range(M)]
    elif kind == "sparse":
        return torch.tensor(sorted({(j, (j + 1) % M) for j in range(M)}))
    elif kind == "uneven":
        pairs = [(j, (j + s) % M) for s in (1, 2) for j in range(M)]
        pairs += [(j, (j + 3) % M) for j in range(M // 2)]
    else:
        raise ValueError(f"kind must be 'balanced', 'uneven' or 'sparse', got {kind!r}")
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


def ood_coefficients(S1: float, construction: str = "pair", norm: float = 1.0) -> tuple[float, float]:
    """The two coefficients ``(c1, c2)`` of an ODR pattern ``c1 mu_{2j-1} + c2 mu_{2j}``; they
    sum to ``S1`` in every construction, which differ in the pattern's norm
    ``beta * sqrt(c1^2 + c2^2)``:

    * ``"pair"``: ``(S1/2, S1/2)``, norm ``S1 / sqrt(2)`` (the chapter's main construction);
    * ``"single"``: ``(S1, 0)``, a scaled IDR pattern, norm ``S1``;
    * ``"unit"``: the pair with sum ``S1`` and norm ``norm`` (1 unless given),
      ``((S1 +- sqrt(2 norm^2 - S1^2)) / 2)`` (mixed signs below ``S1 = norm``; needs
      ``|S1| <= sqrt(2) norm``; ``S1`` may be 0 or negative);
    * ``"mixed"``: ``(S1 + 1, -1)``, mixed signs and a norm above 1.
    """
    if construction == "pair":
        return S1 / 2, S1 / 2
    if construction == "single":
        return S1, 0.0
    if construction == "unit":
        if norm <= 0 or abs(S1) > math.sqrt(2) * norm + 1e-12:
            raise ValueError(f"a pair of coefficients of norm {norm} needs |S1| <= sqrt(2) * norm, got S1 = {S1}")
        r = math.sqrt(max(2 * norm**2 - S1**2, 0.0))
        return (S1 + r) / 2, (S1 - r) / 2
    if construction == "mixed":
        return S1 + 1.0, -1.0
    raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")


def out_of_domain(
    cfg: Config,
    S1: float,
    generator: torch.Generator,
    construction: str = "pair",
    norm: float = 1.0,
    outside: float = 0.0,
) -> Domain:
    """OOD patterns ``mu'_j = c1 mu_{2j-1} + c2 mu_{2j}`` (combinations of IDR patterns whose
    coefficients sum to S1; :func:`ood_coefficients` gives ``c1, c2`` for each construction) and
    random unit-norm combinations of the IDI patterns; all tasks on the ODR patterns. ``norm``
    sets the pattern norm of the ``"unit"`` construction, the only one that allows ``S1 <= 0``.
    ``outside`` in ``[0, 1)`` moves the OOD irrelevant patterns out of the span of the IDI ones,
    which Theorem 2 assumes they stay in: each becomes ``sqrt(1 - outside^2)`` times its IDI
    combination plus ``outside`` times a random unit combination of the IDR patterns (drawn after
    the IDI coefficients, so ``outside = 0`` draws exactly what it always drew)."""
    if not 0.0 <= outside < 1.0:
        raise ValueError(f"outside must lie in [0, 1), got {outside}")
    if S1 <= 0 and construction != "unit":
        raise ValueError(f"S1 must be > 0 (except in the 'unit' construction), got {S1}")
    if 2 * cfg.n_ood_relevant > cfg.M1:
        raise ValueError("need M1 >= 2 * M1' to build the OOD patterns from pairs")
    c1, c2 = ood_coefficients(S1, construction, norm)
    base = in_domain(cfg, "all")
    relevant = c1 * base.relevant[0::2][: cfg.n_ood_relevant] + c2 * base.relevant[1::2][: cfg.n_ood_relevant]
    coef = torch.randn(cfg.n_ood_irrelevant, cfg.M2, generator=generator)
    irrelevant = (coef / coef.norm(dim=1, keepdim=True)) @ base.irrelevant
    if outside > 0:
        mix = torch.randn(cfg.n_ood_irrelevant, cfg.M1, generator=generator)
        along = (mix / mix.norm(dim=1, keepdim=True)) @ (base.relevant / cfg.beta)
        irrelevant = math.sqrt(1 - outside**2) * irrelevant + outside * along
    return Domain(relevant, irrelevant, all_tasks(cfg.n_ood_relevant))


def scaled_length(alpha: float, matches: float) -> int:
    """The context length at which a prompt of context fraction ``alpha`` holds ``matches``
    contexts of the query's pattern on average (``alpha / 2`` of its contexts):
    ``round(2 matches / alpha)``, at least 1 (20, 13, 10, 8 for 4 matches at alpha 0.4-1)."""
    if not 0 < alpha <= 1 or matches <= 0:
        raise ValueError(f"need 0 < alpha <= 1 and matches > 0, got {alpha}, {matches}")
    return max(1, round(2 * matches / alpha))


def oracle_errors(prompts: Prompts) -> dict[str, float]:
    """Two readers that are told which contexts share the query's pattern, on ``prompts``: the
    *oracle* copies their label and guesses on a prompt without one (expected error 1/2 there:
    :func:`no_match_floor` in expectation); *oracle + opposite* reads a prompt without a match as
    the data model writes it, every context of the task's other pattern carrying the opposite
    label, and predicts the opposite of the summed context labels (a zero sum counts 1/2)."""
    none = ~prompts.same.any(1)
    total = prompts.labels.sum(1).float()
    opposite = torch.where(total == 0, 0.5, (torch.sign(-total) != prompts.target).float())
    return {
        "oracle": float(0.5 * none.float().mean()),
        "oracle + opposite": float((opposite * none.float()).mean()),
    }


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


def _draws(domain: Domain, n: int, l: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The random numbers of ``n`` prompts of ``l`` contexts, drawn from ``g`` in the order that
    :func:`sample_prompts` has always drawn them (so that a generator gives the same prompts
    whether its prompts are assembled alone or stacked with other members')."""
    M = domain.relevant.shape[0]
    t = torch.randint(len(domain.tasks), (n,), generator=g)
    z = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    in_task = torch.rand(n, l, generator=g)
    pick_a = torch.rand(n, l, generator=g) < 0.5
    other = torch.randint(0, max(M - 2, 1), (n, l), generator=g)  # skip a and b
    random_sign = torch.randint(0, 2, (n, l), generator=g) * 2 - 1
    k = torch.randint(domain.irrelevant.shape[0], (n, l + 1), generator=g)
    kappa = torch.rand((n, l + 1), generator=g) * 2 - 1
    return t, z, in_task, pick_a, other, random_sign, k, kappa


def _assemble(domain: Domain, draws: Sequence[torch.Tensor], alpha: torch.Tensor, cfg: Config) -> Prompts:
    """Prompts from :func:`_draws`'s numbers, with any leading batch dimensions (members of an
    ensemble); ``alpha`` broadcasts against the ``(..., n, l)`` context draws."""
    t, z, in_task, pick_a, other, random_sign, k, kappa = draws
    a, b = domain.tasks[t, 0], domain.tasks[t, 1]
    query_pattern = torch.where(z > 0, a, b)
    lo, hi = torch.minimum(a, b)[..., None], torch.maximum(a, b)[..., None]
    other = other + (other >= lo).long()
    other = other + (other >= hi).long()
    pattern = torch.where(in_task < alpha, torch.where(pick_a, a[..., None], b[..., None]), other)
    labels = torch.where(pattern == a[..., None], 1, torch.where(pattern == b[..., None], -1, random_sign))
    # inputs mu_j + kappa nu_k of the contexts and the query, drawn together (one gather)
    every = torch.cat([pattern, query_pattern[..., None]], dim=-1)  # (..., n, l + 1)
    l = pattern.shape[-1]
    axes = _axes(domain)
    if axes is not None:  # patterns along coordinate axes (the in-domain ones): write the two entries
        (rel_col, rel_val), (irr_col, irr_val) = axes
        tokens = torch.zeros(*every.shape, cfg.d_X + cfg.d_Y)
        tokens.scatter_(-1, rel_col[every].unsqueeze(-1), rel_val[every].unsqueeze(-1))
        tokens.scatter_(-1, irr_col[k].unsqueeze(-1), ((kappa * cfg.kappa) * irr_val[k]).unsqueeze(-1))
        tokens[..., :l, cfg.d_X] = labels.float()  # label embedding +-q with q = e_1; the query's is 0
        return Prompts(tokens, z.float(), pattern == query_pattern[..., None], labels)
    x = domain.relevant[every] + (kappa * cfg.kappa).unsqueeze(-1) * domain.irrelevant[k]
    y = torch.zeros(*every.shape, cfg.d_Y)  # label embedding +-q with q = e_1; the query's is 0
    y[..., :l, 0] = labels.float()
    return Prompts(torch.cat([x, y], dim=-1), z.float(), pattern == query_pattern[..., None], labels)


def _axes(domain: Domain) -> tuple[tuple[torch.Tensor, torch.Tensor], ...] | None:
    """For a domain whose relevant and irrelevant patterns each have one non-zero coordinate, all
    different (the in-domain patterns, multiples of coordinate axes), each pattern's column and
    value; None otherwise. :func:`_assemble` then writes those entries into zeros, which gives the
    same tokens, to the bit, as summing the patterns (every other term is an exact zero)."""
    out = []
    for patterns in (domain.relevant, domain.irrelevant):
        nonzero = patterns != 0
        if not bool((nonzero.sum(1) == 1).all()):
            return None
        col = nonzero.float().argmax(1)
        out.append((col, patterns[torch.arange(len(col)), col]))
    cols = torch.cat([out[0][0], out[1][0]])
    return tuple(out) if len(torch.unique(cols)) == len(cols) else None


def _check(domain: Domain, n: int, alpha: float, l: int) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if n < 1 or l < 1:
        raise ValueError(f"need n >= 1 and l >= 1, got {n}, {l}")
    if alpha < 1 and domain.relevant.shape[0] < 3:
        raise ValueError("alpha < 1 needs at least one pattern outside the task (M >= 3)")


def sample_prompts(domain: Domain, n: int, *, alpha: float, l: int, cfg: Config, generator: torch.Generator) -> Prompts:
    """``n`` prompts of ``l`` contexts from ``domain``'s tasks (uniformly), as in the paper."""
    _check(domain, n, alpha, l)
    return _assemble(domain, _draws(domain, n, l, generator), torch.tensor(alpha), cfg)


def sample_stacked(
    domain: Domain, n: int, *, alphas: Sequence[float], l: int, cfg: Config, generators: Sequence[torch.Generator]
) -> Prompts:
    """One batch per member of an ensemble, stacked: ``tokens`` ``(members, n, l + 1, d)``,
    ``target`` ``(members, n)``...; member ``e`` draws from ``generators[e]`` at ``alphas[e]``,
    the very prompts :func:`sample_prompts` gives with that generator (one assembly for all)."""
    if len(alphas) != len(generators):
        raise ValueError(f"need one alpha per generator: {len(alphas)} alphas, {len(generators)} generators")
    for a in alphas:
        _check(domain, n, a, l)
    draws = [torch.stack(parts) for parts in zip(*(_draws(domain, n, l, g) for g in generators))]
    return _assemble(domain, draws, torch.tensor(list(alphas))[:, None, None], cfg)
