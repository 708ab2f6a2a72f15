"""The curve readers (iclbook.curves): they decide ledger rows in chapters 1, 3, 4 and 5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iclbook import curves


def test_steps_to_threshold_needs_the_curve_to_stay_below():
    assert curves.steps_to_threshold([0, 10, 20, 30], [0.5, 0.005, 0.02, 0.001], 0.01) == 30
    assert math.isnan(curves.steps_to_threshold([0, 10], [0.5, 0.4], 0.01))


def test_loglog_fit_recovers_a_power_law_and_its_prefactor():
    i = torch.arange(1, 51, dtype=torch.float64)
    slope, intercept = curves.loglog_fit(i, 3.0 / i)
    assert slope == pytest.approx(-1, abs=1e-12) and intercept == pytest.approx(math.log(3), abs=1e-12)
    assert abs(curves.loglog_slope(i, torch.full((50,), 2.0))) < 1e-12
    x = np.array([0.4, 0.6, 0.8, 1.0])
    assert curves.loglog_slope(x, 7 * x ** (-2 / 3)) == pytest.approx(-2 / 3, abs=1e-12)
    # agrees with NumPy's least-squares polynomial fit of the logs
    y = np.array([900.0, 700, 520, 430])
    assert curves.loglog_slope(x, y) == pytest.approx(np.polyfit(np.log(x), np.log(y), 1)[0], abs=1e-12)


def test_loglog_fit_of_a_censored_curve_is_nan_and_bad_shapes_raise():
    assert all(math.isnan(v) for v in curves.loglog_fit([1, 2, 3], [1.0, np.inf, 3.0]))
    assert math.isnan(curves.loglog_slope([1, 2], [1.0, 0.0]))
    with pytest.raises(ValueError, match="matching"):
        curves.loglog_fit([1, 2, 3], [1.0, 2.0])


def test_transition_of_a_plateau_then_a_jump():
    steps = np.arange(0, 2001, 50.0)
    acc = np.where(steps < 1000, 0.125, 0.99)
    acc[:4] = [0.03, 0.06, 0.09, 0.12]  # a short climb from chance to the plateau
    acc[(steps >= 1000) & (steps < 1200)] = [0.3, 0.5, 0.7, 0.85]
    tr = curves.transition(steps, acc, 0.125)
    assert tr["onset"] == 1000 and tr["t_top"] == 1200
    assert tr["rise_ratio"] == pytest.approx(0.2)
    assert tr["plateau_level"] == pytest.approx(0.125)
    in_band = np.abs(acc - 0.125) <= 0.05
    assert tr["plateau_fraction"] == pytest.approx(in_band.mean())
    # in the band at steps 100..950 (18 points, 50 steps each) against 0.1/0.87 * 1200 for a line
    assert tr["linger"] == pytest.approx(18 * 50 / (0.1 / 0.87 * 1200))


def test_transition_of_a_straight_line_lingers_once_and_rises_slowly():
    steps = np.arange(0, 10_001, 10.0)
    acc = 0.9 * steps / 9000  # reaches 0.9 at step 9000
    tr = curves.transition(steps, acc, 0.125)
    assert tr["linger"] == pytest.approx(1.0, abs=0.02)
    assert tr["rise_ratio"] == pytest.approx((9000 - 2250) / 2250, rel=0.01)  # 3: gradual


def test_transition_linger_does_not_depend_on_the_run_after_the_jump():
    steps = np.arange(0, 1501, 50.0)
    acc = np.where(steps < 600, 0.125, 0.99)
    acc[0] = 0.03
    long_steps = np.arange(0, 4001, 50.0)
    long_acc = np.concatenate([acc, np.full(len(long_steps) - len(acc), 0.99)])
    short, long_ = curves.transition(steps, acc, 0.125), curves.transition(long_steps, long_acc, 0.125)
    assert short["linger"] == pytest.approx(long_["linger"])
    assert short["plateau_fraction"] > long_["plateau_fraction"]  # the share does depend on it


def test_transition_without_a_jump_and_bad_input():
    steps = np.arange(0, 1001, 100.0)
    tr = curves.transition(steps, np.full(steps.shape, 0.125), 0.125)
    assert math.isnan(tr["onset"]) and math.isnan(tr["t_top"]) and math.isnan(tr["linger"])
    with pytest.raises(ValueError, match="matching"):
        curves.transition(steps, np.zeros(3), 0.125)
    with pytest.raises(ValueError, match="increase"):
        curves.transition(np.array([0.0, 100, 50]), np.zeros(3), 0.125)


def test_half_rise_and_first_crossing():
    steps = np.array([0, 100, 200, 300, 400.0])
    assert curves.half_rise(steps, np.array([0.1, 0.1, 0.4, 0.9, 0.9])) == 300  # half of 0.1 -> 0.9 is 0.5
    assert curves.half_rise(steps, np.array([0.1, 0.5, 0.5, 0.5, 0.9])) == 100
    assert math.isnan(curves.first_crossing(None, np.array([0.1, 0.2]), 0.5))
    assert curves.first_crossing(None, np.array([0.1, 0.6, 0.7]), 0.5) == 1  # indices as steps
    assert curves.first_crossing(steps[:3], np.array([0.1, 0.6, 0.7]), 0.65) == 200


def test_non_increasing_allows_two_standard_errors_and_no_more():
    n = 1000
    se = curves.binomial_se([0.1], n)[0]  # 0.0095
    gap = 2 * np.hypot(se, se)  # two s.e. of a difference of two rates
    assert curves.non_increasing([0.3, 0.2, 0.1, 0.1], n)
    assert curves.non_increasing([0.1, 0.1 + 0.9 * gap], n)  # a rise within the noise
    assert not curves.non_increasing([0.1, 0.1 + 1.2 * gap], n)
    assert not curves.non_increasing([0.0, 0.005], n)  # 2.2 s.e. of the second rate
    assert curves.binomial_se([0.0], n, floor=1 / n)[0] == pytest.approx(1 / n)
    with pytest.raises(ValueError):
        curves.binomial_se([0.1], 0)
