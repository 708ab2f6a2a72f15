"""The statistics of Dai et al. (2023), exactly as their code computes them, the critics'
variants, and the nulls they lack.

Z = zero-shot, I = in-context, F = the finetuned model evaluated zero-shot.

* :func:`rec2ftp`: ``100 N[Z wrong, F right, I right] / N[Z wrong, F right]``; its independence
  null :func:`rec2ftp_null` is ``P(I right | Z wrong)``.
* :func:`simaou`: ``cos(h_I - h_Z, h_F - h_Z)`` per example and layer, with each ``h`` L2-normalised
  *before* differencing as in the paper (``normalize=True``), or raw (Deutch et al. 2024).
  :func:`simaou_random` is the paper's baseline, ``cos(h_I - h_Z, u)`` with ``u ~ U[0, 1)^d``.
* :func:`simam`: cosine of two pre-softmax attention-score rows (raw, as the paper);
  :func:`simam_delta` the critics' ``cos(m_I - m_Z, m_F - m_Z)``.
* :func:`kendall_tau`: Kendall's tau-b (ties counted as ``scipy.stats.kendalltau`` counts them,
  which is what the paper's code calls), row by row; :func:`attention_softmax` the float64
  softmax that the paper's code applies first.
* :func:`rec2ftp_matched_null`: the independence null within strata of difficulty.
* :func:`bootstrap_ci`: a percentile interval of a mean over examples;
  :func:`stratified_bootstrap_ci` of a mean of group means (tasks), resampled within each group.
* :func:`rate_interval`: Wilson's interval of a percentage.
"""

from __future__ import annotations

import torch


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity along the last dimension."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def _bool(x) -> torch.Tensor:
    return torch.as_tensor(x).bool()


def rec2ftp(z_right, f_right, i_right) -> float:
    """Percent of the examples that finetuning fixes (Z wrong, F right) that ICL also gets right.
    ``nan`` when finetuning fixes none."""
    z, f, i = _bool(z_right), _bool(f_right), _bool(i_right)
    if not (z.shape == f.shape == i.shape):
        raise ValueError("the three correctness masks must have one shape")
    fixed = ~z & f
    n = int(fixed.sum())
    return float("nan") if n == 0 else 100.0 * int((fixed & i).sum()) / n


def rec2ftp_null(z_right, i_right) -> float:
    """What Rec2FTP would be if ICL's successes were independent of finetuning's:
    ``100 P(I right | Z wrong)``."""
    z, i = _bool(z_right), _bool(i_right)
    n = int((~z).sum())
    return float("nan") if n == 0 else 100.0 * int((~z & i).sum()) / n


def simaou(h_i: torch.Tensor, h_z: torch.Tensor, h_f: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``(...,)`` SimAOU of attention outputs ``(..., d)`` (e.g. ``(examples, layers, d)``)."""
    if not (h_i.shape == h_z.shape == h_f.shape):
        raise ValueError(f"shapes differ: {h_i.shape}, {h_z.shape}, {h_f.shape}")
    if normalize:
        h_i, h_z, h_f = (h / h.norm(dim=-1, keepdim=True) for h in (h_i, h_z, h_f))
    return cosine(h_i - h_z, h_f - h_z)


def simaou_random(h_i: torch.Tensor, h_z: torch.Tensor, gen: torch.Generator, normalize: bool = True) -> torch.Tensor:
    """The paper's "Random Delta" baseline, ``cos(h_I - h_Z, u)`` with ``u ~ U[0, 1)^d``."""
    if normalize:
        h_i, h_z = (h / h.norm(dim=-1, keepdim=True) for h in (h_i, h_z))
    # drawn where the generator lives (the same draw on every device), then moved to the outputs'
    u = torch.rand(h_i.shape, generator=gen, dtype=h_i.dtype, device=gen.device).to(h_i.device)
    return cosine(h_i - h_z, u)


def simam(m_a: torch.Tensor, m_b: torch.Tensor) -> torch.Tensor:
    """Cosine of score rows ``(..., tokens)`` (zero-padded rows keep their cosine)."""
    if m_a.shape != m_b.shape:
        raise ValueError(f"shapes differ: {m_a.shape} vs {m_b.shape}")
    return cosine(m_a, m_b)


def simam_delta(m_i: torch.Tensor, m_z: torch.Tensor, m_f: torch.Tensor) -> torch.Tensor:
    """Deutch et al.'s SimAM on updates, ``cos(m_I - m_Z, m_F - m_Z)``."""
    return cosine(m_i - m_z, m_f - m_z)


def attention_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension in float64, as the paper's code (NumPy) computes it before
    ranking. In float32, score rows that span a few hundred units (a finetuned model's
    ``<q'_j, q>`` does) underflow to exact zeros, and the zeros become ties of the ranking."""
    return torch.softmax(torch.as_tensor(scores).double(), -1)


def kendall_tau(a, b) -> torch.Tensor:
    """Kendall's tau-b between the last dimensions of ``a`` and ``b`` (``(..., N)``, N >= 2), by
    ``scipy.stats.kendalltau`` row by row (one call with ``axis=`` where SciPy has it):
    ``(P - Q) / sqrt((P + Q + T_a) (P + Q + T_b))`` with ``T`` the pairs tied in one ranking only.
    ``nan`` where a row is constant."""
    from scipy.stats import kendalltau

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.dim() == 0 or a.shape[-1] < 2:
        raise ValueError("need at least two items to rank")
    ra = a.detach().double().reshape(-1, a.shape[-1]).cpu().numpy()
    rb = b.detach().double().reshape(-1, b.shape[-1]).cpu().numpy()
    try:
        taus = kendalltau(ra, rb, axis=-1).statistic  # one call, row by row
    except TypeError:  # a SciPy without axis=
        taus = [kendalltau(x, y).statistic for x, y in zip(ra, rb)]
    return torch.as_tensor(taus, dtype=torch.float64).reshape(a.shape[:-1])


def rec2ftp_matched_null(z_right, f_right, i_right, strata) -> float:
    """The independence null of Rec2FTP within strata of difficulty: ``100 sum_s P(s | fixed)
    P(I right | Z wrong, s)``, with ``fixed`` = (Z wrong, F right) and ``strata`` an integer label
    per example (e.g. whether the query's class appears among the demonstrations). Rec2FTP above
    this null says that ICL gets right what *finetuning* fixed, beyond what both owe to the
    example's difficulty. ``nan`` when finetuning fixes none."""
    z, f, i = _bool(z_right), _bool(f_right), _bool(i_right)
    s = torch.as_tensor(strata)
    if not (z.shape == f.shape == i.shape == s.shape):
        raise ValueError("masks and strata must have one shape")
    fixed = ~z & f
    n = int(fixed.sum())
    if n == 0:
        return float("nan")
    total = 0.0
    for v in s[fixed].unique():
        wrong = ~z & (s == v)
        total += int((fixed & (s == v)).sum()) / n * int((wrong & i).sum()) / int(wrong.sum())
    return 100.0 * total


def mismatched(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` with its first axis permuted by a random derangement (no example keeps its own
    partner): the null for "the updates of *this* example agree"."""
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least two examples to mismatch")
    shift = int(torch.randint(1, n, (1,), generator=gen))
    perm = torch.randperm(n, generator=gen)
    partner = torch.empty(n, dtype=torch.long)
    partner[perm] = perm.roll(shift)
    return x[partner]


def bootstrap_ci(
    values: torch.Tensor, gen: torch.Generator, n_boot: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (first axis = examples; other
    axes are averaged first)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v.reshape(v.shape[0], -1).mean(1) if v.dim() > 1 else v
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        return float("nan"), float("nan")
    idx = torch.randint(v.numel(), (n_boot, v.numel()), generator=gen)
    means = v[idx].mean(1)
    lo = (1 - level) / 2
    return float(torch.quantile(means, lo)), float(torch.quantile(means, 1 - lo))


def stratified_bootstrap_ci(
    groups, gen: torch.Generator, n_boot: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the groups' means (e.g. a statistic averaged
    over tasks), each group's examples resampled within it. Empty groups are left out."""
    groups = [torch.as_tensor(g, dtype=torch.float64).flatten() for g in groups]
    groups = [g for g in groups if g.numel()]
    if not groups:
        return float("nan"), float("nan")
    means = torch.stack([g[torch.randint(g.numel(), (n_boot, g.numel()), generator=gen)].mean(1) for g in groups])
    means = means.mean(0)
    lo = (1 - level) / 2
    return float(torch.quantile(means, lo)), float(torch.quantile(means, 1 - lo))


def rate_interval(percent: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's interval of a percentage ``percent`` measured on ``n`` examples (it stays inside
    [0, 100] and keeps a width at 0% and 100%); ``nan`` for ``n == 0``."""
    if n <= 0 or percent != percent:
        return float("nan"), float("nan")
    p, z2 = percent / 100.0, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5 / (1 + z2 / n)
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)
