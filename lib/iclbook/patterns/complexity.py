"""Theorem 1's sample complexity read off the alpha sweep's learning curves: the step after which
each run's error stays near the no-match floor, the log-log slope of those steps against alpha,
its bootstrap interval over seeds, and the two-point slope of the step-size control.

The one room of chapter 1 that reads :mod:`iclbook.curves`; nothing here trains, so the weight
cache's key does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iclbook import curves


def times_to(steps: np.ndarray, errors: np.ndarray, floors: Sequence[float], level: float, n_alphas: int) -> np.ndarray:
    """``(alphas, seeds)`` steps until each run's error stays below its floor plus ``level``
    (:func:`iclbook.curves.steps_to_threshold`; ``inf`` where it never does within the budget).
    ``errors`` is ``(runs, checkpoints)`` at ``steps``, the runs ordered alpha by alpha, and
    ``floors[r]`` run ``r``'s no-match floor."""
    if len(errors) != len(floors) or len(errors) % n_alphas:
        raise ValueError(
            f"need one floor per run and the same number of runs per alpha: {len(errors)} runs, "
            f"{len(floors)} floors, {n_alphas} alphas"
        )
    t = np.array([curves.steps_to_threshold(steps, e, f + level) for e, f in zip(errors, floors)])
    return np.where(np.isnan(t), np.inf, t).reshape(n_alphas, -1)


def median_slope(alphas: Sequence[float], times: np.ndarray) -> float:
    """The log-log slope of the median time over seeds against alpha, ``times`` ``(alphas,
    seeds)``. A censored run (``inf``) counts as longer than the budget; NaN if a median is
    censored."""
    med = np.median(times, axis=1)
    return curves.loglog_slope(alphas, med)


def pooled_slope(alphas: Sequence[float], times: np.ndarray) -> float:
    """The least-squares slope of log time against log alpha over every run of ``times``
    ``(alphas, seeds)``: the pooled fit, which uses every run where :func:`median_slope` uses one
    per alpha (a narrower interval for the same runs). NaN if a run is censored (``inf``)."""
    t = np.asarray(times, float)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        return float("nan")
    x = np.repeat(np.log(np.asarray(alphas, float)), t.shape[1])
    y = np.log(t).reshape(-1)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x**2).sum())


def bootstrap_slopes(
    alphas: Sequence[float], times: np.ndarray, rng: np.random.Generator, draws: int = 2000, stat=None
) -> np.ndarray:
    """``(draws,)``: ``stat(alphas, times)`` (default :func:`median_slope`) of ``draws``
    resamplings of the seeds of each alpha (with replacement, independently per alpha); NaN where
    a resampled run or median is censored."""
    stat = median_slope if stat is None else stat
    return np.array(
        [
            stat(alphas, np.take_along_axis(times, rng.integers(0, times.shape[1], times.shape), axis=1))
            for _ in range(draws)
        ]
    )


def bootstrap_slope(
    alphas: Sequence[float], times: np.ndarray, rng: np.random.Generator, draws: int = 2000, stat=None
) -> tuple[float, float]:
    """The 95% percentile interval of ``stat`` (default :func:`median_slope`) over ``draws``
    resamplings of the seeds of each alpha (:func:`bootstrap_slopes`), from the finite slopes;
    ``(nan, nan)`` when 100 or fewer of them are finite."""
    boot = bootstrap_slopes(alphas, times, rng, draws, stat)
    boot = boot[np.isfinite(boot)]
    return tuple(np.percentile(boot, [2.5, 97.5])) if len(boot) > 100 else (np.nan, np.nan)


def excluded(interval: Sequence[float], exponents: dict[str, float]) -> list[str]:
    """The names of ``exponents`` that lie outside the closed ``interval`` (none if it is not
    finite): what a slope's interval rules out."""
    lo, hi = interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return []
    return [name for name, e in exponents.items() if not lo <= e <= hi]


def two_point_slope(times: np.ndarray, run_alphas: Sequence[float], ends: Sequence[float]) -> float:
    """The log-log slope between the two alphas ``ends`` of the median time of the runs at each:
    ``times[r]`` is run ``r``'s time, ``run_alphas[r]`` its alpha."""
    medians = [np.median(times[[i for i, a in enumerate(run_alphas) if a == e]]) for e in ends]
    return np.diff(np.log(medians))[0] / np.diff(np.log(ends))[0]
