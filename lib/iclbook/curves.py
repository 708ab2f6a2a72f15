"""Reading learning curves: when a curve crosses a level, how abrupt a jump is, power-law slopes.

Every function takes plain arrays (NumPy arrays, lists, or CPU tensors), one curve at a time:
``steps`` are the logged steps, increasing, and ``values`` the measure at each. The chapters'
histories give these arrays (:meth:`iclbook.train.History.curve`, ``Run.series`` in chapter 3).

======================  ==========================================================================
``first_crossing``      first step at which a curve reaches a level (an accuracy rising)
``steps_to_threshold``  first step after which a curve stays below a level (an error falling)
``half_rise``           first step halfway from a curve's first to its last value
``transition``          a plateau-then-jump accuracy curve: onset, top, rise/onset, linger ratio
``loglog_fit``          least-squares line of ``log(values)`` against ``log(x)``: slope, intercept
``loglog_slope``        its slope alone
``non_increasing``      whether a measured rate never rises by more than its sampling error
======================  ==========================================================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _array(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=float)


def first_crossing(steps: Any, values: Any, level: float) -> float:
    """First step at which ``values`` reaches ``level`` or more (NaN if never). ``steps`` may be
    ``None``: the indices ``0, 1, ...`` (a descent logged at every step). Like every reader here,
    it takes ``(steps, values, ...)``."""
    values = _array(values)
    steps = np.arange(len(values)) if steps is None else _array(steps)
    hit = np.flatnonzero(values >= level)
    return float(steps[hit[0]]) if hit.size else math.nan


def steps_to_threshold(steps: Any, values: Any, threshold: float) -> float:
    """First step at which ``values`` drops below ``threshold`` and stays below (NaN if never)."""
    steps, v = _array(steps), _array(values)
    for i in range(len(v)):
        if np.all(v[i:] < threshold):
            return float(steps[i])
    return math.nan


def half_rise(steps: Any, values: Any) -> float:
    """First step at which ``values`` passes halfway from its first to its last value."""
    values = _array(values)
    return first_crossing(steps, values, 0.5 * (values[0] + values[-1]))


def transition(steps: Any, acc: Any, baseline: float, *, band: float = 0.05, top: float = 0.9) -> dict[str, float]:
    """Describe an accuracy curve that should plateau at ``baseline`` and then jump to ``top``.

    ``plateau_fraction``: share of the logged steps with ``|acc - baseline| <= band`` (it
    depends on how long training goes on after the jump); ``onset``: first step at
    ``baseline + 0.1`` or above; ``t_top``: first step at ``top``; ``rise_ratio``:
    ``(t_top - onset) / onset``, the rise measured against the time spent before it (a
    constant-rate rise from 0 gives about 3, an exponential approach to 1 about 17);
    ``linger``: the time spent in the band (each logged step in it counts until the next one)
    over the time a constant-rate climb from the first value to ``top``,
    reaching it at ``t_top``, would spend there: 1 for a straight line, above 1 where the curve
    sits at ``baseline``, whatever the run's length after the jump.
    """
    steps, acc = _array(steps), _array(acc)
    if steps.shape != acc.shape or steps.ndim != 1 or len(steps) < 2:
        raise ValueError(f"need matching 1-d steps and accuracies (at least 2), got {steps.shape}, {acc.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must increase")
    weight = np.diff(steps, append=2 * steps[-1] - steps[-2])  # each point stands until the next
    onset = first_crossing(steps, acc, baseline + 0.1)
    t_top = first_crossing(steps, acc, top)
    in_band = np.abs(acc - baseline) <= band
    straight = 2 * band / (top - acc[0]) * (t_top - steps[0])  # a constant-rate climb's time in the band
    return {
        "plateau_fraction": float(np.mean(in_band)),
        "linger": float(weight[in_band].sum() / straight) if straight > 0 else math.nan,
        "plateau_level": float(np.median(acc[in_band])) if in_band.any() else math.nan,
        "onset": onset,
        "t_top": t_top,
        "rise_ratio": (t_top - onset) / onset if onset > 0 else math.nan,
    }


def loglog_fit(x: Any, values: Any) -> tuple[float, float]:
    """Least-squares line ``log(values) = slope * log(x) + intercept``; ``(nan, nan)`` where a
    value is not finite and positive (a run that never reached its threshold)."""
    lx, y = _array(x), _array(values)
    if lx.shape != y.shape or lx.ndim != 1 or len(lx) < 2:
        raise ValueError(f"need matching 1-d x and values (at least 2), got {lx.shape}, {y.shape}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0) and np.all(lx > 0)):
        return math.nan, math.nan
    lx, ly = np.log(lx), np.log(y)
    cx = lx - lx.mean()
    slope = float((cx * (ly - ly.mean())).sum() / (cx * cx).sum())
    return slope, float(ly.mean() - slope * lx.mean())


def loglog_slope(x: Any, values: Any) -> float:
    """The slope of :func:`loglog_fit`: the exponent of a power law ``values ~ x ** slope``."""
    return loglog_fit(x, values)[0]


def binomial_se(p: Any, n: int, *, floor: float = 0.0) -> np.ndarray:
    """Standard error ``sqrt(p (1 - p) / n)`` of rates ``p`` measured on ``n`` trials each; with
    ``floor``, ``max(p, floor)`` in place of the first ``p`` (a rate measured as 0 on ``n`` trials
    still has an uncertainty of about ``1 / n``)."""
    if n < 1:
        raise ValueError(f"need n >= 1 trials, got {n}")
    p = _array(p)
    return np.sqrt(np.maximum(p, floor) * (1 - p) / n)


def non_increasing(rates: Any, n: int, *, k: float = 2.0, floor: float = 0.0) -> bool:
    """Whether a curve of rates (errors, each measured on ``n`` trials) never rises from one
    point to the next by more than ``k`` standard errors of the difference
    (:func:`binomial_se`, ``floor`` as there): "falls, within sampling error"."""
    r = _array(rates)
    se = binomial_se(r, n, floor=floor)
    return bool(np.all(r[1:] <= r[:-1] + k * np.hypot(se[:-1], se[1:])))
