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
=========================  ====================================================================

No training code imports this module, so a change to a rule here retrains nothing (the weight
cache is keyed on the source of :mod:`iclbook.induction.training` and what it imports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iclbook import curves


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
