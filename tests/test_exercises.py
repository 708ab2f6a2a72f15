"""The exercises' check helper (lib/iclbook/exercises.py): every reference passes its own strict
check (the known-answer cases come from the mathematics, so a reference that drifted fails), a
stub is "not attempted", and a deliberately wrong function gets the message a learner needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclbook import exercises as E
from iclbook import lenses
from iclbook import patterns as pt
from iclbook.contextual import patches as cxp
from iclbook.implicit import dual_form, metrics


@pytest.mark.parametrize("name", sorted(E.EXERCISES))
def test_every_reference_passes_its_own_strict_check(name):
    assert E.check(name, E.solution(name), strict=True).correct


@pytest.mark.parametrize("name", sorted(E.EXERCISES))
def test_a_stub_is_not_attempted_and_never_fails(name):
    def stub(*args):
        raise NotImplementedError

    for fn in (stub, lambda *args: None):
        r = E.check(name, fn)
        assert r.status == "not attempted" and "write" in r.message.lower()
    with pytest.raises(AssertionError, match="fails its own check"):
        E.check(name, stub, strict=True)


def _only_items(att2, classes, query_class):
    match = (classes == query_class[:, None]).to(att2.dtype)
    return (att2[:, :-1:2] * match).sum(1)


def _no_baseline(shift, label_shift, match):
    cos = metrics.cosine(shift.unsqueeze(1), label_shift)
    m = match.to(cos.dtype)
    return (cos * m).sum(1) / m.sum(1)


# name: (a wrong function, words its message must contain)
WRONG = {
    "1.1": (lambda att, same: att.sum(-1), "expected [0.5], got [1]"),
    "1.2": (
        lambda norms, rate: pt.pruning_mask(norms, rate, "largest"),
        "half pruned: expected [1, 0, 0, 1], got [0, 1, 1, 0]",
    ),
    "1.3": (lambda F, z: torch.clamp(1 - z * F, min=0).sum(), "zero margins: expected 1, got 2"),
    "2.1": (
        lambda a, b, c: metrics.simaou(a, b, c, normalize=False),
        "of other norms (normalised first): expected [1], got [0.9648]",
    ),
    "2.2": (
        lambda wk, wv, x: (wk @ x) @ (wv @ x).T,
        "Wrong shape on no demonstration at all: expected (3, 2), got (2, 3)",
    ),
    "2.3": (lambda wk, wv, xd, x, q: dual_form.zsl_weight(wk, wv, x) @ q, "expected [1, 1], got [0, 1]"),
    "3.1": (lambda s, v, level: float(s[np.argmax(v > level)]), "never gets there: expected nan, got 0"),
    "3.2": (lambda on, c, q: float(on.sum(1).mean()), "the first and third of the query's class: expected 0.75, got 1"),
    "3.3": (
        lambda p, c: float((c == p[:, None]).float().mean()),
        "one prediction in its context, one not: expected 0.5, got 0.25",
    ),
    "4.1": (
        lambda W, af, ar: torch.einsum("hm,nm,nk->nhk", W, af - ar, ar),
        "twice as long: the patch divides by ||A(x)||^2: expected [0, 0, 1, 0], got [0, 0, 4, 0]",
    ),
    "4.2": (
        lambda W0, pre: cxp.prop31_weights(W0, pre) - W0,
        "one context token moving it to (1, 1): expected [1, 0, 0, 1",
    ),
    "4.3": (
        lambda W, af, ar: cxp.rank_one_update(W, af[:1], ar[:1])[0],
        "each pushed toward the other: expected [0, 1, 1, 0]",
    ),
    "5.1": (_only_items, "expected [0.4], got [0.2]"),
    "5.2": (_no_baseline, "along the other label's: expected [-1], got [0]"),
    "5.3": (lambda f, a, p: float(np.mean(p) / np.mean(f)), "no gap at all (the answer is NaN): expected nan, got 1"),
}


def test_every_exercise_has_a_wrong_answer_test():
    assert sorted(WRONG) == sorted(E.EXERCISES)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_function_is_caught_with_a_helpful_message(name):
    fn, words = WRONG[name]
    r = E.check(name, fn)
    assert r.status == "wrong", r
    assert words in r.message, r.message


def test_the_messages_name_a_factor_a_sign_and_an_error():
    double = E.check("5.1", lambda *a: 2 * lenses.class_share(*a))
    assert double.status == "wrong" and "Off by a factor of 2 on every case" in double.message
    flipped = E.check("2.1", lambda *a: -metrics.simaou(*a))
    assert "The sign is flipped" in flipped.message
    raised = E.check("1.1", lambda att, same: att @ same)
    assert raised.status == "wrong" and "it raised RuntimeError" in raised.message
    assert "not numbers" in E.check("1.3", lambda F, z: "hinge").message
    assert str(E.check("1.3", pt.hinge_loss)).startswith("✓ Exercise 1.3: correct.")


def test_unknown_names_and_chapters():
    with pytest.raises(KeyError, match="no exercise '9.9'"):
        E.check("9.9", lambda: None)
    assert [ex.name for ex in E.chapter_exercises("05")] == ["5.1", "5.2", "5.3"]


def test_the_solution_shows_the_library_source_it_returns(capsys):
    fn = E.solution("1.2")
    out = capsys.readouterr().out
    assert fn is E.get("1.2").reference
    assert "def pruning_mask(" in out and "def _magnitude_mask(" in out
    assert E.solution("5.1", show=False) is lenses.class_share and capsys.readouterr().out == ""
