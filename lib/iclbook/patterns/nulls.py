"""What chapter 1's rows are read against: the value a model or a statistic *without* the claimed
mechanism gets on the same measurement, in the same run (issue 29).

* random non-negative mixes of the relevant patterns in place of the feature parts
  (Proposition 2, "along the mean pattern");
* every relabelling of the models between two groups (the split control);
* per-prompt readers that need no training: k-NN on a prompt's own contexts, a random context's
  label (the context-length row, the noise control);
* random pruning masks, many draws read from one forward pass per model (Theorem 3, Fig. 23);
* the alpha labels of the sample-complexity sweep shuffled among its runs (the ordering and the
  exponent);
* the neurons' large/small labels shuffled (the lucky neurons).

Nothing here trains, and :mod:`iclbook.patterns.training` does not import it, so the weight
cache's key does not depend on it. Shapes: ``n`` prompts, ``l`` contexts, ``m`` neurons.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from iclbook import curves, internals
from iclbook.patterns.baselines import knn_predict, random_context_error  # noqa: F401 (re-exported)
from iclbook.patterns.complexity import median_slope
from iclbook.patterns.config import Config
from iclbook.patterns.data import Domain, Prompts
from iclbook.patterns.measures import length_sweep, pruning_mask, separation_auc

# ---------------------------------------------------------------------------------------------
# Proposition 2: random non-negative mixes of the patterns
# ---------------------------------------------------------------------------------------------


def mix_null(
    models: Sequence[torch.nn.Module],
    cfg: Config,
    geometries: Sequence[dict],
    rng: np.random.Generator,
    draws: int = 1000,
) -> np.ndarray:
    """``(models, draws)``: the median cosine with the mean relevant pattern of the large neurons'
    feature parts (row norm of ``W_O`` above the median, as in
    :func:`~iclbook.patterns.measures.feature_geometry`) after their component inside the span of
    the relevant patterns is replaced by a random non-negative mix of the patterns with the same
    norm, weights i.i.d. uniform on [0, 1]; the component outside the span is kept. This is a
    feature part that is filtered and non-negative but *not* aimed at the mean pattern: the
    cosine that positivity alone buys."""
    out = np.zeros((len(models), draws))
    for s, (m, g) in enumerate(zip(models, geometries)):
        big = (g["row_norm"] > g["row_norm"].median()).numpy()
        feat = m.neuron_rows().detach()[:, : cfg.d_X].double().numpy()[big]
        inside, outside = feat[:, : cfg.M1], feat[:, cfg.M1 :]
        w = rng.uniform(0.0, 1.0, size=(draws, len(feat), cfg.M1))
        w *= (np.linalg.norm(inside, axis=1) / np.linalg.norm(w, axis=2))[..., None]
        # cos with mu_bar = (1, ..., 1, 0...) / sqrt(M1): the sum of the in-span part over the whole norm
        norm = np.sqrt((w**2).sum(-1) + (outside**2).sum(-1))
        cos = w.sum(-1) / np.sqrt(cfg.M1) / norm
        out[s] = np.median(cos, axis=1)
    return out


def above_null(ours: Sequence[float], null: np.ndarray, q: float = 0.95) -> np.ndarray:
    """Per model, whether ``ours[s]`` lies above the ``q`` quantile of ``null[s]`` (``(models,
    draws)``)."""
    return np.asarray(ours) > np.quantile(null, q, axis=1)


def null_pass_share(null: np.ndarray, q: float = 0.95, need: int | None = None) -> float:
    """The share of the null's draws that pass :func:`above_null` on at least ``need`` models (all
    of them by default), each draw read against the whole null: the chance that the rule passes a
    feature part that positivity alone shaped."""
    need = null.shape[0] if need is None else need
    passing = (null > np.quantile(null, q, axis=1, keepdims=True)).sum(0) >= need
    return float(passing.mean())


# ---------------------------------------------------------------------------------------------
# The split control: every relabelling of the models between the two groups
# ---------------------------------------------------------------------------------------------


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)``, its standard error (sample variances, floored
    at 1e-12) and its Welch-Satterthwaite degrees of freedom."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = max(float(np.sqrt(va + vb)), 1e-12)
    df = (va + vb) ** 2 / max(va**2 / (len(a) - 1) + vb**2 / (len(b) - 1), 1e-300)
    return float(a.mean() - b.mean()), se, float(df)


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """``(mean(a) - mean(b)) / sqrt(var(a)/len(a) + var(b)/len(b))`` (sample variances): the
    difference over its standard error, floored at 1e-12."""
    diff, se, _ = _welch(a, b)
    return diff / se


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``mean(a) - mean(b)`` and its two-sided ``level`` interval,
    Student's t with the Welch-Satterthwaite degrees of freedom (two or more values per group)."""
    from scipy.stats import t as student_t

    if min(len(a), len(b)) < 2:
        raise ValueError(f"need two or more values per group, got {len(a)} and {len(b)}")
    diff, se, df = _welch(a, b)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return diff, diff - half, diff + half


def relabellings(n_a: int, n_b: int) -> list[np.ndarray]:
    """Every way of relabelling ``n_a + n_b`` pooled values into a first group of ``n_a`` (boolean
    masks over the pool, the original labelling, the first ``n_a``, first)."""
    out = []
    for first in itertools.combinations(range(n_a + n_b), n_a):
        mask = np.zeros(n_a + n_b, bool)
        mask[list(first)] = True
        out.append(mask)
    return out


def relabel_null(
    a: Sequence[float], b: Sequence[float], stat: Callable[[np.ndarray, np.ndarray], float] = welch_t
) -> np.ndarray:
    """``stat`` (default :func:`welch_t`) for every way of relabelling the pooled values into a
    group of ``len(a)`` and one of ``len(b)`` (:func:`relabellings`, the original labelling
    first): the statistic when the group label carries no information."""
    pooled = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    return np.array([stat(pooled[m], pooled[~m]) for m in relabellings(len(a), len(b))])


# ---------------------------------------------------------------------------------------------
# Readers without training: k-NN on a prompt's own contexts, a random context's label
# ---------------------------------------------------------------------------------------------


def knn_error(prompts: Prompts, cfg: Config, k: int = 1) -> float:
    """Error of k-NN fitted on each prompt's own context pairs (as in
    :func:`~iclbook.patterns.baselines.classical_errors`: a one-class context predicts its class):
    an untrained reader that finds the contexts nearest the query and copies their label."""
    x = prompts.tokens[:, :-1, : cfg.d_X].double().numpy()
    xq = prompts.tokens[:, -1, : cfg.d_X].double().numpy()
    y = prompts.labels.numpy()
    one_class = (y == y[:, :1]).all(1)
    pred = np.where(one_class, y[:, 0], knn_predict(x, y, xq, k))
    return float((pred != prompts.target.numpy()).mean())


def knn_length_sweep(
    domain: Domain,
    cfg: Config,
    alphas: Sequence[float],
    lengths: Sequence[int],
    *,
    n: int,
    prompt_generator: Callable[[], torch.Generator],
    k: int = 1,
) -> np.ndarray:
    """``(alphas, lengths)``: :func:`knn_error` on the very prompts that
    :func:`~iclbook.patterns.measures.length_sweep` draws with the same arguments (a fresh
    ``prompt_generator()`` per point)."""
    reader = functools.partial(knn_error, cfg=cfg, k=k)
    return length_sweep([reader], domain, cfg, alphas, lengths, n=n, prompt_generator=prompt_generator)[:, 0]


def l_star_ratio(lengths: Sequence[int], errors: np.ndarray, floor_star: np.ndarray, level: float = 0.01) -> np.ndarray:
    """Per alpha, the first length at which ``errors`` (``(alphas, lengths)``) falls below
    ``level``, over the floor's length ``floor_star``. A curve that never does within the lengths
    counts as ``(lengths[-1] + 1) / floor_star``, a lower bound (it needs more than the longest
    prompt measured)."""
    out = []
    for e, f in zip(errors, floor_star):
        below = np.asarray(e) < level
        l_star = float(np.asarray(lengths)[np.argmax(below)]) if below.any() else float(lengths[-1]) + 1
        out.append(l_star / f)
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# Theorem 3: many pruning masks from one forward pass per model
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def masked_scores(model: torch.nn.Module, prompts: Prompts, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Hinge loss and error ``(masks,)`` of ``model`` with each row of ``masks`` ``(k, m)``
    zeroing its pruned neurons. The neurons' activations do not depend on the mask, so one
    forward pass serves every mask: ``F = relu(hidden) @ (a * mask)``, what
    :func:`~iclbook.patterns.measures.evaluate` computes mask by mask."""
    active = internals.read(model, prompts.tokens, "active").double()  # (n, m)
    F = active @ (model.a.double()[:, None] * masks.double().T)  # (n, k)
    z = prompts.target.double()[:, None]
    hinge = torch.clamp(1 - z * F, min=0).mean(0)
    err = (torch.sign(F) != z).double().mean(0)
    return hinge.numpy(), err.numpy()


def pruning_draws(
    models: Sequence[torch.nn.Module],
    row_norms: Sequence[torch.Tensor],
    prompts: Prompts,
    rates: Sequence[float],
    *,
    draws: int,
    mask_generator: Callable[[int], torch.Generator] | None,
    hows: Sequence[str] = ("magnitude", "random", "largest"),
) -> dict[str, np.ndarray]:
    """:func:`~iclbook.patterns.measures.pruning_sweep`'s readings from one forward pass per model:
    ``{how: (2, models, rates)}`` (index 0 the hinge loss, 1 the error; ``"random"`` the mean over
    ``draws`` masks, draw ``d`` from ``mask_generator(d)``), and, with ``"random"``,
    ``"random draws"``: ``(2, models, rates, draws)``, every mask's reading."""
    if len(models) != len(row_norms):
        raise ValueError(f"need one set of row norms per model: {len(row_norms)} for {len(models)} models")
    if "random" in hows and (mask_generator is None or draws < 1):
        raise ValueError("random pruning needs draws >= 1 and mask_generator(d) -> torch.Generator")
    R = len(rates)
    out = {how: np.zeros((2, len(models), R)) for how in hows}
    if "random" in hows:
        out["random draws"] = np.zeros((2, len(models), R, draws))
    for s, (m, norms) in enumerate(zip(models, row_norms)):
        masks, where = [], []
        for k, r in enumerate(rates):
            for how in hows:
                for d in range(draws if how == "random" else 1):
                    masks.append(pruning_mask(norms, r, how, mask_generator(d) if how == "random" else None))
                    where.append((how, k, d))
        hinge, err = masked_scores(m, prompts, torch.stack(masks))
        for (how, k, d), h, e in zip(where, hinge, err):
            if how == "random":
                out["random draws"][:, s, k, d] = h, e
            else:
                out[how][:, s, k] = h, e
        if "random" in hows:
            out["random"][:, s] = out["random draws"][:, s].mean(-1)
    return out


def pruning_rules(
    prune: dict[str, np.ndarray],
    rates: np.ndarray,
    small_frac: Sequence[float],
    q: float = 0.05,
    magnitude: np.ndarray | None = None,
    largest: np.ndarray | None = None,
) -> dict[str, list]:
    """Theorem 3's comparisons with random pruning, per model ``s``, from :func:`pruning_draws`
    (``rates[0] = 0``; ``rates[2]`` the first rate of the linear check), on the hinge loss:

    * ``magnitude_better``: magnitude pruning at the largest rate up to ``small_frac[s]`` below the
      ``q`` quantile of the random masks there (better than all but a share ``q`` of them);
    * ``largest_worse``: largest-first pruning above the ``1 - q`` quantile of the random masks at
      every rate from ``rates[2]``;
    * ``linear``: largest-first's rise over the unpruned loss, divided by the rate, never below its
      value at ``rates[2]`` (0.1% tolerance).

    ``magnitude`` and ``largest`` ``(models, rates)`` replace the two orders' hinge losses (the
    null reads one random mask in their place)."""
    draws = prune["random draws"][0]  # (models, rates, draws)
    mag = prune["magnitude"][0] if magnitude is None else magnitude
    big = prune["largest"][0] if largest is None else largest
    lo, hi = np.quantile(draws, q, axis=-1), np.quantile(draws, 1 - q, axis=-1)
    better, worse, linear = [], [], []
    for s in range(draws.shape[0]):
        k = np.flatnonzero(rates <= small_frac[s] + 1e-9)[-1]
        better.append(bool(mag[s, k] < lo[s, k]))
        worse.append(bool(np.all(big[s, 2:] > hi[s, 2:])))
        rise = (big[s, 1:] - prune["magnitude"][0, s, 0]) / rates[1:]
        linear.append(bool(np.all(rise[1:] >= rise[1] * 0.999)))
    return {"magnitude_better": better, "largest_worse": worse, "linear": linear}


def pruning_null_share(
    prune: dict[str, np.ndarray], rates: np.ndarray, small_frac: Sequence[float], q: float = 0.05
) -> float:
    """The share of random masks that pass chapter 1's Theorem 3 rule (:func:`pruning_rules`'s
    ``magnitude_better`` and ``linear``) on every model when read in place of both magnitude and
    largest-first pruning: how often the rule passes an order of the neurons that knows nothing
    about their norms."""
    draws = prune["random draws"][0]
    ok = []
    for d in range(draws.shape[-1]):
        r = pruning_rules(prune, rates, small_frac, q, magnitude=draws[..., d], largest=draws[..., d])
        ok.append(all(r["magnitude_better"]) and all(r["linear"]))
    return float(np.mean(ok))


# ---------------------------------------------------------------------------------------------
# The sample-complexity sweep: its alpha labels shuffled among its runs
# ---------------------------------------------------------------------------------------------


def alpha_shuffles(
    alphas: Sequence[float], times: np.ndarray, rng: np.random.Generator, shuffles: int = 2000, stat=None
) -> dict:
    """``times`` ``(alphas, seeds)`` with its runs shuffled among the alphas ``shuffles`` times: a
    sweep in which alpha carries no information about the time. Returns ``"slopes"`` (each
    shuffle's :func:`~iclbook.patterns.complexity.median_slope`; NaN where a median is censored)
    and ``"ordered"``, the share of shuffles whose median times fall strictly as alpha grows.
    ``stat`` replaces :func:`~iclbook.patterns.complexity.median_slope` (e.g. the pooled fit)."""
    stat = median_slope if stat is None else stat
    flat = times.reshape(-1)
    slopes, ordered = [], []
    for _ in range(shuffles):
        t = rng.permutation(flat).reshape(times.shape)
        med = np.median(t, axis=1)
        slopes.append(stat(alphas, t))
        ordered.append(bool(np.all(np.isfinite(med)) and np.all(np.diff(med) < 0)))
    return {"slopes": np.array(slopes), "ordered": float(np.mean(ordered))}


def curve_means(errors: Sequence[Sequence[float]] | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(means, standard errors)``, each ``(points,)``: the mean of each error curve of ``errors``
    (``(points, lengths)``, every length measured on ``n`` prompts) over its lengths, and the
    standard error of that mean were the lengths' draws independent (``sqrt(sum se^2) / K`` over
    the ``K`` lengths, each :func:`iclbook.curves.binomial_se` floored at ``1 / n``)."""
    e = np.asarray(errors, float)
    if e.ndim != 2 or e.shape[1] < 1:
        raise ValueError(f"need error curves of shape (points, lengths), got {e.shape}")
    se = curves.binomial_se(e, n, floor=1 / n)
    return e.mean(1), np.sqrt((se**2).sum(1)) / e.shape[1]


def falls_beyond_noise(errors: Sequence[float] | np.ndarray, n: int, k: float = 2.0) -> bool:
    """Whether errors (each measured on ``n`` prompts) fall strictly from one point to the next and
    the first exceeds the last by more than ``k`` standard errors of their difference
    (:func:`iclbook.curves.binomial_se`, floored at ``1 / n``): an ordering that sampling noise
    alone would rarely produce. Given error curves ``(points, lengths)``, the same of their
    :func:`curve_means`."""
    e = np.asarray(errors, float)
    if e.ndim == 2:
        e, se = curve_means(e, n)
    else:
        se = curves.binomial_se(e, n, floor=1 / n)
    return bool(np.all(np.diff(e) < 0) and e[0] - e[-1] > k * np.hypot(se[0], se[-1]))


# ---------------------------------------------------------------------------------------------
# The lucky neurons: their group labels shuffled
# ---------------------------------------------------------------------------------------------


def shuffled_auc(
    scores: torch.Tensor | np.ndarray, in_group: torch.Tensor | np.ndarray, rng: np.random.Generator, draws: int = 200
) -> np.ndarray:
    """``(draws,)``: the separation AUC (:func:`~iclbook.patterns.measures.separation_auc`) of
    ``scores`` for a group of the same size drawn at random: what initial activity says about a
    group it did not decide (about 0.5)."""
    g = np.asarray(in_group, dtype=bool)
    return np.array([separation_auc(scores, rng.permutation(g)) for _ in range(draws)])
