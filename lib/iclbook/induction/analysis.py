"""What chapter 3 decides from trained runs: the numbers its ledger rows judge, and the rules
that compute them, each with a known-answer test (``tests/test_induction.py``).

=========================  ====================================================================
``plateau_share``          share of a measure's rise made before IC accuracy leaves its plateau
``lag_window``             how far a half-rise may lag IC's and still count as "at the jump"
``strategy_shift``         IC rise and IW fall between two members of the data grid
``eps_sweep``              the members of a grid that differ only in the within-class noise
``classify_minimal``       one minimal-model seed's outcome: induction, mirror, stall, other
``cliff_ratio``            a descent's steepest loss drop over its slow phase's mean rate
``calibration_summary``    the step-size calibration record, one line per Adam step
``rival_curves``           rises without a plateau or a cliff, with a curve's start and end
``plateau_rivals``         linger ratio of a curve and of its rivals, on the same grid
``jump_rivals``            rise / onset of a curve (with its grid interval) and of its rivals
``share_at``               share of a measure's rise made by a given step
``plateau_middle``         the middle evaluation of IC accuracy's plateau at B/N
``context_reader``         the random-context-label reader's accuracies on a run's sets
``icl_shift``              the shift of a grid comparison, IC counted above the B/N reader
``decay_rival``            an exponential decay through a descent's start, slow phase and end
``worst_seed``             the worst seed's number, NaN if any seed has none (never dropped)
``unjumped``               the seeds whose IC accuracy never made the jump (the rows' condition)
``head_lead``              how far the head's rise runs ahead of IC's at the last pre-jump point
``head_formed``            whether a run's TILA2 rose clearly above its untrained, uniform value
``first_crossings``        the first checkpoint at which each of many curves reaches a level
``skewness``               the sample skewness of onsets (0 for a symmetric sample)
``skewness_se``            its standard error under a normal law (the test of skew)
``bimodality_coefficient`` Sarle's coefficient: 5/9 for a uniform law, above it two modes
``bootstrap``              a statistic and its percentile bootstrap interval
``symmetric_null``         a statistic on normal draws with the same median, IQR and grid
``scaling_exponent``       the slope of log t against log K over many runs
``exponent_interval``      that slope and its interval, seeds resampled within each K
``shuffled_exponent``      the slope with K shuffled among the runs (its null)
=========================  ====================================================================

The nulls and rivals are computed on the chapter's own curves, grids and evaluation sets, so a
row reads our number against what a curve or a reader *without* the claimed mechanism scores
on the same measurement.

No training code imports this module, so a change to a rule here retrains nothing (the weight
cache is keyed on the source of :mod:`iclbook.induction.training` and what it imports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from iclbook import curves
from iclbook.induction.data import context_label_baseline


def plateau_share(steps: Any, values: Any, onset: float) -> float:
    """Share of a measure's whole rise (first to last value) already made at the last
    evaluation before ``onset`` (the step at which IC accuracy leaves its plateau,
    ``curves.transition(...)["onset"]``). NaN if no evaluation comes before it or the measure
    did not move."""
    vals = np.asarray(values)
    before = vals[np.asarray(steps) < onset]
    return (before[-1] - vals[0]) / (vals[-1] - vals[0]) if len(before) and vals[-1] != vals[0] else np.nan


def lag_window(steps: int, eval_every: int, share: float = 0.075) -> int:
    """The largest lag (in steps) of a measure's half-rise behind or ahead of IC accuracy's that
    still counts as forming *at* the jump: ``share`` of training, and at least two evaluation
    intervals, so that a profile that evaluates rarely can pass with a lag of one interval."""
    if steps < 1 or eval_every < 1:
        raise ValueError(f"need steps >= 1 and eval_every >= 1, got {steps}, {eval_every}")
    return max(2 * eval_every, round(share * steps))


def strategy_shift(lo: Any, hi: Any) -> tuple[float, float]:
    """``(IC rise, IW fall)`` from the run ``lo`` to the run ``hi`` (their ``final`` measures):
    both positive when ``hi`` reads its context more and its weights less. NaN for a run that is
    absent (``None``: a grid that lacks the member)."""
    if lo is None or hi is None:
        return (math.nan, math.nan)
    return (hi.final["IC"] - lo.final["IC"], lo.final["IW"] - hi.final["IW"])


def eps_sweep(runs: Sequence[Any]) -> list[Any] | None:
    """The first group of runs that share ``(K, B, p_B, zipf)`` and hold at least two values of
    ``eps``, sorted by ``eps`` (the author's ε sweep); None when the grid has none."""
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r.cfg.K, r.cfg.B, r.cfg.p_B, r.cfg.zipf), []).append(r)
    return next((sorted(g, key=lambda r: r.cfg.eps) for g in groups.values() if len({r.cfg.eps for r in g}) >= 2), None)


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


def cliff_ratio(descent: Mapping[str, np.ndarray]) -> float:
    """Steepest loss drop per step over the mean rate of the slow phase (from the start until
    ``p_correct`` first reaches 0.1) of a descent (:func:`iclbook.induction.pheno.pheno_descent`);
    NaN if ``p_correct`` never reaches 0.1. A steady exponential decay scores a few; a cliff,
    tens or more."""
    t = curves.first_crossing(None, descent["p_correct"], 0.1)
    loss = descent["loss"]
    return np.nan if not np.isfinite(t) else (-np.diff(loss)).max() / ((loss[0] - loss[int(t)]) / t)


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
        lines.append(
            f"Adam {lr:g}, {rs[0]['steps']} steps, {len(rs)} seeds: onset {span([r['onset'] for r in rs], '.0f')}, "
            f"rise/onset {span([r['rise_ratio'] for r in rs], '.2f')}, linger {span([r['linger'] for r in rs], '.1f')}, "
            f"plateau share {span([r['plateau_fraction'] for r in rs], '.0%')}; final IC ≥ {min(r['IC'] for r in rs):.3f}, "
            f"IC2 ≥ {min(r['IC2'] for r in rs):.3f}, IW ≤ {max(r['IW'] for r in rs):.3f}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Nulls and rivals: what a curve, a reader or a descent without the mechanism scores
# ---------------------------------------------------------------------------------------------


def rival_curves(steps: Any, acc: Any, *, top: float = 0.9) -> dict[str, np.ndarray]:
    """Two accuracy curves without a plateau and without a cliff, sampled on ``steps``, each
    from the curve's first value ``acc[0]`` at ``steps[0]`` to ``top`` at ``t_top``, the first
    step at which ``acc`` reaches ``top`` (the same start and end, the same grid):

    * ``exponential``: ``a0 (top / a0) ** ((t - t0) / (t_top - t0))``, a constant growth rate
      of the log (its linger ratio does not depend on the time constant);
    * ``logistic``: ``1 / (1 + exp(-(t - m) / w))`` through the same two points, a constant
      growth rate of the logit.

    Both are capped at 1 and held at ``top`` or above from ``t_top`` on, so that they reach
    ``top`` at the same evaluation as ``acc`` whatever the rounding. Empty when ``acc`` never
    reaches ``top`` or starts at or above it."""
    t, a = np.asarray(steps, dtype=float), np.asarray(acc, dtype=float)
    t_top = curves.first_crossing(t, a, top)
    a0, t0 = float(a[0]), float(t[0])
    if not np.isfinite(t_top) or t_top <= t0 or not 0 < a0 < top:
        return {}
    x = (t - t0) / (t_top - t0)
    logit = np.log(a0 / (1 - a0)) + x * (np.log(top / (1 - top)) - np.log(a0 / (1 - a0)))
    out = {"exponential": a0 * (top / a0) ** x, "logistic": 1 / (1 + np.exp(-logit))}
    return {k: np.where(t >= t_top, np.maximum(np.minimum(v, 1.0), top), np.minimum(v, 1.0)) for k, v in out.items()}


def _interval(steps: Any) -> float:
    return float(np.median(np.diff(np.asarray(steps, dtype=float))))


def plateau_rivals(steps: Any, acc: Any, baseline: float, *, band: float = 0.05, top: float = 0.9) -> dict[str, Any]:
    """The linger ratio (``curves.transition``) of ``acc`` and of its rivals on the same grid.

    Returns ``linger`` (ours), ``step`` (what one evaluation in the band adds to the ratio: the
    grid's resolution), ``rivals`` (``exponential`` and ``logistic`` of :func:`rival_curves`,
    and ``one evaluation``, a curve that crosses the band between two evaluations but one) and
    ``margin``: how many evaluations more than the largest rival ours spends in the band
    (``(linger - max rival) / step``). Rivals and margin are NaN where ``acc`` never reaches
    ``top``."""
    ours = curves.transition(steps, acc, baseline, band=band, top=top)
    a = np.asarray(acc, dtype=float)
    t = np.asarray(steps, dtype=float)
    straight = 2 * band / (top - a[0]) * (ours["t_top"] - t[0])
    step = _interval(t) / straight if np.isfinite(straight) and straight > 0 else math.nan
    rivals = {
        name: curves.transition(t, curve, baseline, band=band, top=top)["linger"]
        for name, curve in rival_curves(t, a, top=top).items()
    }
    rivals = rivals or {"exponential": math.nan, "logistic": math.nan}
    rivals["one evaluation"] = step
    largest = max(rivals.values()) if all(np.isfinite(v) for v in rivals.values()) else math.nan
    return {"linger": ours["linger"], "step": step, "rivals": rivals, "margin": (ours["linger"] - largest) / step}


def jump_rivals(steps: Any, acc: Any, baseline: float, *, top: float = 0.9) -> dict[str, Any]:
    """The rise / onset ratio (``curves.transition``) of ``acc``, its interval on the grid, and
    that of its rivals (:func:`rival_curves`) on the same grid.

    A crossing read at an evaluation happened after the evaluation before it, so the true onset
    lies in ``(onset - dt, onset]`` and the true top in ``(t_top - dt, t_top]``, ``dt`` the
    evaluation interval: ``interval = ((rise - dt) / onset, (rise + dt) / (onset - dt))``.
    ``rivals`` holds each rival's ratio and ``rivals_low`` the lower end of its own interval
    (the most abrupt the grid lets it look). NaN where a crossing is missing."""
    tr = curves.transition(steps, acc, baseline, top=top)
    dt = _interval(steps)
    onset, rise = tr["onset"], tr["t_top"] - tr["onset"]
    ok = np.isfinite(onset) and np.isfinite(rise) and onset > dt
    interval = (max(rise - dt, 0.0) / onset, (rise + dt) / (onset - dt)) if ok else (math.nan, math.nan)
    rivals, low = {}, {}
    for name, curve in rival_curves(steps, acc, top=top).items():
        rt = curves.transition(steps, curve, baseline, top=top)
        rivals[name] = rt["rise_ratio"]
        low[name] = max(rt["t_top"] - rt["onset"] - dt, 0.0) / rt["onset"] if rt["onset"] > 0 else math.nan
    if not rivals:
        rivals = low = {"exponential": math.nan, "logistic": math.nan}
    return {"rise_ratio": tr["rise_ratio"], "interval": interval, "rivals": rivals, "rivals_low": low}


def share_at(steps: Any, values: Any, step: float) -> float:
    """Share of a measure's whole rise (first to last value) made by ``step``: at the last
    evaluation at or before it. NaN if none is, or the measure did not move."""
    vals = np.asarray(values, dtype=float)
    upto = vals[np.asarray(steps, dtype=float) <= step]
    return (upto[-1] - vals[0]) / (vals[-1] - vals[0]) if len(upto) and vals[-1] != vals[0] else math.nan


def plateau_middle(steps: Any, acc: Any, baseline: float, *, band: float = 0.05) -> float:
    """The step of the middle evaluation (the later of two middles) among those before IC
    accuracy's onset (``curves.transition``) at which it lies within ``band`` of ``baseline``:
    a point inside the slow phase, away from its start and from the jump. NaN without one."""
    t, a = np.asarray(steps, dtype=float), np.asarray(acc, dtype=float)
    onset = curves.first_crossing(t, a, baseline + 0.1)
    on = np.flatnonzero((np.abs(a - baseline) <= band) & ((t < onset) if np.isfinite(onset) else True))
    return float(t[on[len(on) // 2]]) if on.size else math.nan


def context_reader(run: Any) -> SimpleNamespace:
    """A reader that outputs a uniformly random label of its context, scored on ``run``'s own
    evaluation sets (:func:`iclbook.induction.data.context_label_baseline`): ``B / N`` on the
    bursty sets, whatever the weights. It has no induction head (it does not find the query's
    item), so a claim about in-context learning must beat it. Shaped like a run for
    :func:`strategy_shift` (``cfg`` and ``final``)."""
    return SimpleNamespace(cfg=run.cfg, final={k: context_label_baseline(s) for k, s in run.sets.items()})


def icl_shift(lo: Any, hi: Any, level: float) -> tuple[float, float]:
    """``(IC rise, IW fall)`` from ``lo`` to ``hi`` as :func:`strategy_shift`, with the IC rise
    counted only above ``level`` (the random-context-label reader's ``B / N`` on ``hi``'s IC
    set): ``hi.IC - max(lo.IC, level)``. A network that learns only to output some context
    label gains nothing. NaN for an absent run."""
    if lo is None or hi is None:
        return (math.nan, math.nan)
    return (hi.final["IC"] - max(lo.final["IC"], level), lo.final["IW"] - hi.final["IW"])


def decay_rival(descent: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A loss curve without a cliff for :func:`cliff_ratio`: the exponential decay
    ``l_end + (l_0 - l_end) exp(-t / tau)`` from the descent's first loss towards its last one,
    through its loss at ``t10``, the step at which ``p_correct`` first reaches 0.1 (the end of
    its slow phase), with the descent's own ``p_correct`` (so the slow phase ends at the same step).
    Its cliff ratio is ``x / (1 - exp(-x))`` with ``x = t10 / tau``. Returns ``loss`` and
    ``p_correct``; the loss is NaN where ``p_correct`` never reaches 0.1."""
    loss, p = np.asarray(descent["loss"], dtype=float), np.asarray(descent["p_correct"], dtype=float)
    t10 = curves.first_crossing(None, p, 0.1)
    if not np.isfinite(t10) or t10 <= 0:
        return {"loss": np.full_like(loss, math.nan), "p_correct": p}
    l0, l_end, l10 = loss[0], loss[-1], loss[int(t10)]
    if not l0 > l10 > l_end:
        return {"loss": np.full_like(loss, math.nan), "p_correct": p}
    tau = t10 / math.log((l0 - l_end) / (l10 - l_end))
    return {"loss": l_end + (l0 - l_end) * np.exp(-np.arange(len(loss)) / tau), "p_correct": p}


# ---------------------------------------------------------------------------------------------
# Aggregates over seeds and the conditions a row needs before it reads one
# ---------------------------------------------------------------------------------------------


def worst_seed(values: Sequence[float], worst: str = "max") -> float:
    """The worst seed's number: the largest (``worst="max"``) or the smallest (``"min"``) of
    ``values``, one per seed. A seed without a number (NaN or None: a run that never jumped) makes
    the result NaN, so the row reading it is inconclusive: Python's ``max([0.25, nan])`` is 0.25
    and ``max([nan, 0.25])`` is NaN, so a plain ``max`` drops such a seed unless it comes first,
    and reports the others as if they were all. Raises ``ValueError`` for no values or an
    unknown ``worst``."""
    if worst not in ("max", "min"):
        raise ValueError(f"worst must be 'max' or 'min', got {worst!r}")
    vals = [math.nan if v is None else float(v) for v in values]
    if not vals:
        raise ValueError("worst_seed needs at least one seed's value")
    if not all(math.isfinite(v) for v in vals):
        return math.nan
    return max(vals) if worst == "max" else min(vals)


def unjumped(runs: Sequence[Any], transitions: Sequence[Mapping[str, float]]) -> list[Any]:
    """The seeds (``run.seed``) whose IC accuracy never made the jump: no onset (never reached
    B/N + 0.1) or no top (never reached 0.9) in ``transitions`` (``curves.transition`` per run,
    in the order of ``runs``). A row about the jump, its shape or what happens at it reads every
    seed, so it is judged only where this list is empty."""
    if len(runs) != len(transitions):
        raise ValueError(f"one transition per run: {len(runs)} runs, {len(transitions)} transitions")
    return [r.seed for r, tr in zip(runs, transitions) if not (np.isfinite(tr["onset"]) and np.isfinite(tr["t_top"]))]


def _share_from(steps: np.ndarray, values: np.ndarray, origin: float, upto: float) -> float:
    """Share of the rise from the value at the last evaluation at or before ``origin`` to the last
    value, made at the last evaluation before ``upto``."""
    start = values[steps <= origin]
    before = values[steps < upto]
    if not len(start) or not len(before) or values[-1] == start[-1]:
        return math.nan
    return float((before[-1] - start[-1]) / (values[-1] - start[-1]))


def head_lead(steps: Any, head: Mapping[str, Any], ic: Any, baseline: float, *, band: float = 0.05) -> float:
    """How far the induction head's rise runs ahead of IC accuracy's just before the jump: at the
    last evaluation before IC's onset (``curves.transition``), the largest share of its rise that
    a head measure (``head``: name -> values on ``steps``, e.g. ILA1 and TILA2) has made, minus
    the share of its rise that IC accuracy has made, both counted from the middle of the plateau
    (:func:`plateau_middle`) to the last evaluation, so that IC's early climb from chance to
    ``baseline`` does not count. 0 for a head that rises exactly as IC does; positive where the
    head leads. NaN without a plateau or an onset."""
    t, a = np.asarray(steps, dtype=float), np.asarray(ic, dtype=float)
    onset = curves.transition(t, a, baseline, band=band)["onset"]
    middle = plateau_middle(t, a, baseline, band=band)
    if not (np.isfinite(onset) and np.isfinite(middle)):
        return math.nan
    ic_share = _share_from(t, a, middle, onset)
    shares = [_share_from(t, np.asarray(v, dtype=float), middle, onset) for v in head.values()]
    if not shares or not all(np.isfinite([ic_share, *shares])):
        return math.nan
    return max(shares) - ic_share


def head_formed(run: Any, at: float | None = None, *, factor: float = 2.0) -> bool:
    """Whether ``run`` has an induction head at step ``at`` (default: its last checkpoint):
    TILA2, the query's attention on the labels whose item matches it, at least ``factor`` times
    its value at step 0, where the untrained network attends about uniformly (TILA2 = B/(2N + 1)
    on bursty sequences, B matching labels of 2N + 1 tokens). A network that only copies some
    context label has no such head."""
    steps, tila2 = run.series("TILA2")
    if at is None:
        value = tila2[-1]
    else:
        upto = tila2[steps <= at]
        if not len(upto):
            return False
        value = upto[-1]
    return bool(value >= factor * tila2[0])


# ---------------------------------------------------------------------------------------------
# Many seeds of the minimal model (kinetics): onsets, their tail, the in-weight exponent
# ---------------------------------------------------------------------------------------------


def first_crossings(steps: np.ndarray, curves: np.ndarray, level: float) -> np.ndarray:
    """``(members,)`` the first checkpoint step at which each row of ``curves`` ``(members,
    checkpoints)`` reaches ``level`` (NaN where it never does), as
    :func:`iclbook.curves.first_crossing` reads one curve."""
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    steps = np.asarray(steps, dtype=float)
    if curves.shape[-1] != steps.shape[0]:
        raise ValueError(f"need one value per checkpoint: {curves.shape[-1]} values, {steps.shape[0]} steps")
    hit = curves >= level
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), steps[first], np.nan)


def skewness(x: np.ndarray) -> float:
    """The sample skewness ``g1 = m3 / m2^(3/2)`` (central moments; 0 for a symmetric sample).
    Raises ``ValueError`` for fewer than 3 values or any NaN."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or len(x) < 3 or not np.all(np.isfinite(x)):
        raise ValueError(f"need 3 or more finite values, got {x!r}")
    d = x - x.mean()
    m2 = float((d * d).mean())
    return float((d**3).mean() / m2**1.5) if m2 > 0 else 0.0


def skewness_se(n: int) -> float:
    """The standard error of the sample skewness of ``n`` values drawn from a normal law,
    ``sqrt(6 n (n - 1) / ((n - 2) (n + 1) (n + 3)))`` (about ``sqrt(6 / n)``): a skewness twice
    this is the usual test that a sample is skewed."""
    if n < 3:
        raise ValueError(f"need n >= 3, got {n}")
    return math.sqrt(6.0 * n * (n - 1) / ((n - 2) * (n + 1) * (n + 3)))


def bimodality_coefficient(x: np.ndarray) -> float:
    """Sarle's bimodality coefficient ``(g1^2 + 1) / (g2 + 3 (n - 1)^2 / ((n - 2) (n - 3)))`` with
    ``g2`` the sample's excess kurtosis: 1/3 for a normal law, 5/9 for a uniform one, above 5/9
    where a sample has two modes (or one very skewed mode: read it with the histogram)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 4:
        raise ValueError(f"need 4 or more values, got {n}")
    d = x - x.mean()
    m2 = float((d * d).mean())
    if m2 == 0:
        return math.nan
    g2 = float((d**4).mean() / m2**2) - 3.0
    return (skewness(x) ** 2 + 1.0) / (g2 + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def bootstrap(x: np.ndarray, stat, rng: np.random.Generator, *, draws: int = 2000, level: float = 0.95):
    """``(stat(x), (lo, hi))``: the statistic and its percentile bootstrap interval (resampling
    the values of ``x`` with replacement, ``draws`` times)."""
    x = np.asarray(x, dtype=float)
    values = np.array([stat(x[rng.integers(0, len(x), len(x))]) for _ in range(draws)])
    tail = 100 * (1 - level) / 2
    return float(stat(x)), (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))


def symmetric_null(
    x: np.ndarray, grid: float, stat, rng: np.random.Generator, *, draws: int = 1000, level: float = 0.95
):
    """What ``stat`` reads on onsets *without* a tail: ``draws`` samples of ``len(x)`` values from
    the normal law with ``x``'s median and interquartile range (standard deviation IQR / 1.349),
    each read on the same evaluation grid (rounded up to a multiple of ``grid``, as a crossing is
    seen at the next evaluation). Returns the median of ``stat`` over the draws and its central
    ``level`` interval."""
    x = np.asarray(x, dtype=float)
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    sd = max(q75 - q25, grid) / 1.349
    values = np.array([stat(np.ceil(rng.normal(q50, sd, len(x)) / grid) * grid) for _ in range(draws)])
    tail = 100 * (1 - level) / 2
    return float(np.median(values)), (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))


def scaling_exponent(K: np.ndarray, t: np.ndarray) -> float:
    """The least-squares slope of ``log t`` against ``log K`` over every member (``t ~ K^nu``)."""
    lk, lt = np.log(np.asarray(K, dtype=float)), np.log(np.asarray(t, dtype=float))
    if lk.shape != lt.shape or len(np.unique(lk)) < 2 or not np.all(np.isfinite(lt)):
        raise ValueError("need finite positive times for at least two values of K")
    c = lk - lk.mean()
    return float((c * (lt - lt.mean())).sum() / (c * c).sum())


def exponent_interval(
    K: np.ndarray, t: np.ndarray, rng: np.random.Generator, *, draws: int = 2000, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """:func:`scaling_exponent` and its bootstrap interval, resampling the members (seeds) within
    each ``K`` with replacement."""
    K, t = np.asarray(K, dtype=float), np.asarray(t, dtype=float)
    groups = [np.flatnonzero(K == k) for k in np.unique(K)]
    values = []
    for _ in range(draws):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        values.append(scaling_exponent(K[idx], t[idx]))
    tail = 100 * (1 - level) / 2
    return scaling_exponent(K, t), (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))


def shuffled_exponent(
    K: np.ndarray, t: np.ndarray, rng: np.random.Generator, *, draws: int = 1000, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """The null of :func:`scaling_exponent`: the slope with the members' ``K`` shuffled among them
    (times that owe nothing to ``K``), median over ``draws`` shuffles and its central interval."""
    K, t = np.asarray(K, dtype=float), np.asarray(t, dtype=float)
    values = np.array([scaling_exponent(rng.permutation(K), t) for _ in range(draws)])
    tail = 100 * (1 - level) / 2
    return float(np.median(values)), (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
