"""Exercises a reader can check: :func:`check` runs the reader's function against the library.

Each chapter ends with a few exercises that ask for a piece of its mechanism. The reader writes a
function in the chapter's exercise cell and calls ``check(name, fn)``; the hidden solution cell
after it takes the library's own function (:func:`solution`, the code the chapter runs, so it
cannot drift from the chapter) and checks it strictly, which the build and the Colab imitation
execute::

    def same_pattern_attention(att, same):
        raise NotImplementedError          # the reader's cell: a stub is "not attempted"

    exercises.check("1.1", same_pattern_attention)

Every exercise has *known-answer* cases, whose answers come from the mathematics (a uniform
attention puts ``k / l`` of its mass on ``k`` contexts; a patch satisfies ``(W + dW) a = W a'``),
not from the reference, and random cases whose answers come from the reference. The verdict is
one of:

* ``correct``: every case agrees (to ``atol`` / ``rtol``);
* ``not attempted``: the function raises ``NotImplementedError`` or returns ``None``, as the
  reader's stub does, so a notebook run with the stubs in place never fails;
* ``wrong``, with what is wrong in a learner's words: the shape, a constant factor (a missing
  normalisation), the sign, or the first input it gets wrong with the expected and returned
  values, or the error it raised.

``check(..., strict=True)`` (the solution cells) raises ``AssertionError`` on anything but
``correct``: a reference that broke fails the build.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from iclbook import curves, lenses
from iclbook import patterns as pt
from iclbook.contextual import patches as cxp
from iclbook.implicit import dual_form, metrics
from iclbook.induction import measures as ihm


@dataclass(frozen=True)
class Case:
    """One input of an exercise: the arguments, the expected answer (None: the reference's) and
    what the input is, in words (shown when the reader's function gets it wrong)."""

    args: tuple
    expected: Any = None
    what: str = ""


@dataclass(frozen=True)
class Exercise:
    """An exercise: its ``name`` (``"1.1"``), ``title``, the ``signature`` the reader writes, the
    library's ``reference``, its ``known`` cases (answers from the mathematics) and ``random``,
    which draws one random input from a generator (answers from the reference)."""

    name: str
    title: str
    signature: str
    reference: Callable[..., Any]
    known: Callable[[], list[Case]]
    random: Callable[[torch.Generator], tuple]
    draws: int = 5
    atol: float = 1e-6
    rtol: float = 1e-5
    shows: tuple[Callable[..., Any], ...] = ()  # what the solution prints (default: the reference)


@dataclass
class Result:
    """What :func:`check` found: ``status`` (``"correct"``, ``"not attempted"`` or ``"wrong"``) and
    a ``message`` for the reader."""

    name: str
    status: str
    message: str
    cases: int = 0
    details: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        mark = {"correct": "✓", "not attempted": "·", "wrong": "✗"}[self.status]
        return f"{mark} Exercise {self.name}: {self.status}. {self.message}"

    __repr__ = __str__  # what a notebook shows when a cell ends with check(...)


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name} is registered twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def get(name: str) -> Exercise:
    try:
        return EXERCISES[name]
    except KeyError:
        raise KeyError(f"no exercise {name!r}; the exercises are {sorted(EXERCISES)}") from None


def solution(name: str, *, show: bool = True) -> Callable[..., Any]:
    """The library's function for exercise ``name``: the code the chapter itself runs. With
    ``show`` its source is shown (the functions of the exercise's ``shows``, or the reference),
    read from the library at run time, so the solution on the page is the code that runs."""
    ex = get(name)
    if show:
        source = "\n\n".join(inspect.getsource(f).rstrip() for f in (ex.shows or (ex.reference,)))
        text = f"```python\n{source}\n```"
        try:
            from IPython import get_ipython  # noqa: PLC0415
            from IPython.display import Markdown, display  # noqa: PLC0415
        except ImportError:  # a plain Python run
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display(Markdown(text))
        else:
            print(source)
    return ex.reference


def _tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)


def _short(t: torch.Tensor) -> str:
    flat = t.flatten()
    body = ", ".join(f"{v:.4g}" for v in flat[:6].tolist())
    return f"[{body}{', ...' if flat.numel() > 6 else ''}]" if t.dim() else f"{float(t):.4g}"


def _shape(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)}" if t.dim() else "a number"


def _mismatch(ex: Exercise, got: Any, want: Any, what: str) -> tuple[str, torch.Tensor, torch.Tensor] | None:
    """None where ``got`` agrees with ``want``; else what is wrong in words, and both as tensors."""
    try:
        g = _tensor(got)
    except (TypeError, ValueError):
        return f"on {what} it returned {type(got).__name__}, not numbers", torch.zeros(0), torch.zeros(0)
    w = _tensor(want)
    if g.shape != w.shape:
        return f"wrong shape on {what}: expected {_shape(w)}, got {_shape(g)}", torch.zeros(0), torch.zeros(0)
    both_nan = torch.isnan(g) & torch.isnan(w)
    if bool((torch.isclose(g, w, atol=ex.atol, rtol=ex.rtol) | both_nan).all()):
        return None
    return f"wrong on {what}: expected {_short(w)}, got {_short(g)}", g.flatten(), w.flatten()


def _factor(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
    """The one constant ratio got / expected over every entry of the cases, if there is one (at
    least two entries show it, and it is neither 0 nor 1): a missing normalisation or a sign."""
    g = torch.cat([p[0] for p in pairs]) if pairs else torch.zeros(0)
    w = torch.cat([p[1] for p in pairs]) if pairs else torch.zeros(0)
    if len(g) == 0 or not bool((torch.isfinite(g) == torch.isfinite(w)).all()):
        return None
    ok = torch.isfinite(w) & (w.abs() > 1e-9)
    if int(ok.sum()) < 2 or not bool((g[~ok & torch.isfinite(w)].abs() < 1e-9).all()):
        return None
    ratio = g[ok] / w[ok]
    r = float(ratio.median())
    if abs(r) < 1e-9 or abs(r - 1) < 1e-6 or not bool(torch.isclose(ratio, torch.full_like(ratio, r), rtol=1e-6).all()):
        return None
    return r


def check(name: str, fn: Callable[..., Any], *, strict: bool = False, seed: int = 0) -> Result:
    """Run the reader's ``fn`` on exercise ``name``'s known-answer cases, then on ``draws`` random
    inputs against the reference, and return what was found (a notebook shows it as one line).
    With ``strict`` (the solution cells) anything but ``correct`` raises ``AssertionError``."""
    ex = get(name)
    gen = torch.Generator().manual_seed(seed)
    cases = list(ex.known()) + [
        Case(ex.random(gen), None, f"random input {k + 1} of {ex.draws}") for k in range(ex.draws)
    ]
    result, first, pairs = None, None, []
    for n, case in enumerate(cases):
        want = case.expected if case.expected is not None else ex.reference(*case.args)
        try:
            got = fn(*case.args)
        except NotImplementedError:
            result = Result(name, "not attempted", "Write the function in the cell above, then run it again.", n)
            break
        except Exception as err:  # the reader's code: any error is a finding, said in words
            result = Result(name, "wrong", f"On {case.what} it raised {type(err).__name__}: {err}.", n)
            break
        if got is None:
            result = Result(name, "not attempted", "The function returns None: write it, then run the cell again.", n)
            break
        problem = _mismatch(ex, got, want, case.what)
        if problem is None:
            pairs.append((_tensor(got).flatten(), _tensor(want).flatten()))
            continue
        text, g, w = problem
        if not len(g):  # a wrong shape or type: say so at once
            result = Result(name, "wrong", text[0].upper() + text[1:] + ".", n)
            break
        pairs.append((g, w))
        first = first or (text, case.what, n)
    if result is None and first is not None:
        r = _factor(pairs)
        text, what, n = first
        if r is not None and abs(r + 1) < 1e-6:
            text = f"the sign is flipped (first on {what})"
        elif r is not None:
            text = f"off by a factor of {r:.4g} on every case (first on {what}): a missing or extra normalisation?"
        result = Result(name, "wrong", text[0].upper() + text[1:] + ".", n)
    if result is None:
        result = Result(
            name,
            "correct",
            f"It agrees with the library on {len(ex.known())} cases worked out by hand and {ex.draws} random ones.",
            len(cases),
        )
    if strict and not result.correct:
        raise AssertionError(f"the reference of exercise {name} fails its own check: {result}")
    return result


# ---------------------------------------------------------------------------------------------
# The exercises, chapter by chapter (each reference is the function the chapter runs)
# ---------------------------------------------------------------------------------------------


def _rand_attention(g: torch.Generator, n: int, l: int) -> torch.Tensor:
    return torch.softmax(torch.randn(n, l, generator=g, dtype=torch.float64) * 2, dim=-1)


def _known_same_pattern() -> list[Case]:
    uniform = torch.full((1, 4), 0.25, dtype=torch.float64)
    one_hot = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    return [
        Case(
            (uniform, torch.tensor([[True, False, True, False]])),
            torch.tensor([0.5]),
            "a uniform attention over 4 contexts, 2 matching",
        ),
        Case(
            (one_hot, torch.tensor([[False, True, False]])),
            torch.tensor([1.0]),
            "all attention on the one matching context",
        ),
        Case(
            (one_hot, torch.tensor([[True, False, True]])),
            torch.tensor([0.0]),
            "all attention on a context that does not match",
        ),
    ]


register(
    Exercise(
        "1.1",
        "attention on the query's pattern",
        "same_pattern_attention(att: (n, l) rows summing to 1, same: (n, l) bool) -> (n,)",
        pt.same_pattern_attention,
        _known_same_pattern,
        lambda g: (_rand_attention(g, 6, 5), torch.rand(6, 5, generator=g) < 0.4),
    )
)


def _magnitude_mask(row_norms: torch.Tensor, rate: float) -> torch.Tensor:
    return pt.pruning_mask(row_norms, rate, "magnitude")


register(
    Exercise(
        "1.2",
        "the magnitude-pruning mask",
        "magnitude_mask(row_norms: (m,), rate: float) -> (m,) of 0.0 (pruned) and 1.0 (kept)",
        _magnitude_mask,
        shows=(_magnitude_mask, pt.pruning_mask),
        known=lambda: [
            Case(
                (torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.5),
                torch.tensor([1.0, 0.0, 0.0, 1.0]),
                "norms (3, 1, 2, 4), half pruned",
            ),
            Case((torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.0), torch.ones(4), "norms (3, 1, 2, 4), nothing pruned"),
            Case(
                (torch.tensor([0.5, 0.2, 0.9, 0.1, 0.7]), 0.4),
                torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]),
                "five norms, 40% (two) pruned",
            ),
        ],
        random=lambda g: (torch.rand(10, generator=g) + 0.1, float(torch.randint(0, 11, (1,), generator=g)) / 10),
    )
)

register(
    Exercise(
        "1.3",
        "the hinge loss",
        "hinge_loss(F: (n,) margins, z: (n,) labels +1 or -1) -> a number",
        pt.hinge_loss,
        lambda: [
            Case(
                (torch.tensor([2.0, -3.0]), torch.tensor([1.0, -1.0])), torch.tensor(0.0), "margins met by both prompts"
            ),
            Case((torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0])), torch.tensor(1.0), "zero margins"),
            Case(
                (torch.tensor([0.5, 1.0]), torch.tensor([1.0, -1.0])),
                torch.tensor(1.25),
                "one margin half met, one wrong side",
            ),
        ],
        lambda g: (
            torch.randn(8, generator=g, dtype=torch.float64) * 2,
            torch.randint(0, 2, (8,), generator=g).double() * 2 - 1,
        ),
    )
)


def _known_simaou() -> list[Case]:
    z = torch.tensor([[1.0, 0.0, 0.0]])
    return [
        Case(
            (torch.tensor([[1.0, 1.0, 0.0]]), z, torch.tensor([[1.0, 1.0, 0.0]])),
            torch.tensor([1.0]),
            "the same output after ICL and finetuning",
        ),
        Case(
            (torch.tensor([[0.0, 1.0, 0.0]]), z, torch.tensor([[0.0, 0.0, 1.0]])),
            torch.tensor([0.5]),
            "unit outputs along two other axes",
        ),
        Case(
            (torch.tensor([[0.0, 2.0, 0.0]]), z, torch.tensor([[0.0, 5.0, 0.0]])),
            torch.tensor([1.0]),
            "outputs along one axis, of other norms (normalised first)",
        ),
    ]


register(
    Exercise(
        "2.1",
        "SimAOU",
        "simaou(h_icl: (n, d), h_zsl: (n, d), h_ft: (n, d)) -> (n,): cos(ĥ_icl - ĥ_zsl, ĥ_ft - ĥ_zsl), ĥ = h / ‖h‖",
        metrics.simaou,
        _known_simaou,
        lambda g: tuple(torch.randn(4, 7, generator=g, dtype=torch.float64) for _ in range(3)),
    )
)

register(
    Exercise(
        "2.2",
        "the meta-gradient of ICL",
        "icl_update(w_k: (d_k, d), w_v: (d_v, d), x_demo: (d, n')) -> (d_v, d_k): Σ_i (W_V x'_i)(W_K x'_i)ᵀ",
        dual_form.icl_update,
        lambda: [
            Case(
                (torch.eye(2), torch.eye(2), torch.tensor([[1.0], [2.0]])),
                torch.tensor([[1.0, 2.0], [2.0, 4.0]]),
                "identity projections, one demonstration (1, 2)",
            ),
            Case(
                (torch.eye(2), 2 * torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])),
                2 * torch.eye(2),
                "two unit demonstrations, W_V = 2I",
            ),
            Case((torch.eye(3)[:2], torch.eye(3), torch.zeros(3, 0)), torch.zeros(3, 2), "no demonstration at all"),
        ],
        lambda g: (
            torch.randn(3, 5, generator=g, dtype=torch.float64),
            torch.randn(4, 5, generator=g, dtype=torch.float64),
            torch.randn(5, 6, generator=g, dtype=torch.float64),
        ),
    )
)


def _linear_attention(
    w_k: torch.Tensor, w_v: torch.Tensor, x_demo: torch.Tensor, x: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    out = dual_form.relaxed_icl(w_k, w_v, x_demo, x, q)
    return out["zsl"] + out["update"]


register(
    Exercise(
        "2.3",
        "the dual form",
        "dual_output(w_k: (d_k, d), w_v: (d_v, d), x_demo: (d, n'), x: (d, n), q: (d_k,)) -> (d_v,): (W_ZSL + ΔW_ICL) q",
        _linear_attention,
        shows=(_linear_attention, dual_form.relaxed_icl, dual_form.zsl_weight, dual_form.icl_update),
        known=lambda: [
            Case(
                (
                    torch.eye(2),
                    torch.eye(2),
                    torch.tensor([[1.0], [0.0]]),
                    torch.tensor([[0.0], [1.0]]),
                    torch.tensor([1.0, 1.0]),
                ),
                torch.tensor([1.0, 1.0]),
                "two orthogonal unit tokens, q = (1, 1)",
            ),
            Case(
                (torch.eye(2), torch.eye(2), torch.zeros(2, 0), torch.tensor([[2.0], [0.0]]), torch.tensor([1.0, 0.0])),
                torch.tensor([4.0, 0.0]),
                "no demonstration: the zero-shot part alone",
            ),
        ],
        random=lambda g: (
            torch.randn(3, 5, generator=g, dtype=torch.float64),
            torch.randn(4, 5, generator=g, dtype=torch.float64),
            torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.randn(5, 2, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64),
        ),
    )
)


register(
    Exercise(
        "3.1",
        "when the cliff starts",
        "first_crossing(steps: (T,), values: (T,), level: float) -> a number: the first step at which values >= level "
        "(NaN if never)",
        curves.first_crossing,
        lambda: [
            Case((np.array([0, 100, 200, 300]), np.array([0.1, 0.1, 0.6, 0.9]), 0.5), 200.0, "a plateau, then a jump"),
            Case((np.array([0, 100, 200]), np.array([0.1, 0.2, 0.3]), 0.5), math.nan, "a curve that never gets there"),
            Case((np.array([0, 10, 20]), np.array([0.5, 0.1, 0.9]), 0.5), 0.0, "a curve at the level from the start"),
        ],
        lambda g: (
            np.arange(12) * 50.0,
            np.cumsum(torch.rand(12, generator=g).numpy()) / 6,
            float(torch.rand((), generator=g)) * 1.5,
        ),
    )
)


def _f64(x: Any) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _known_tila2() -> list[Case]:
    return [
        Case(
            (_f64([[0.5, 0.25, 0.25]]), torch.tensor([[1, 2, 1]]), torch.tensor([1])),
            0.75,
            "attention 0.5, 0.25, 0.25 on three labels, the first and third of the query's class",
        ),
        Case(
            (_f64([[0.0, 1.0, 0.0]]), torch.tensor([[3, 4, 5]]), torch.tensor([4])),
            1.0,
            "all attention on the one target label",
        ),
        Case(
            (_f64([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1, 2], [1, 2]]), torch.tensor([1, 1])),
            0.5,
            "two sequences, one looking at its target, one away from it",
        ),
    ]


def _random_tila2(g: torch.Generator) -> tuple:
    n, N = 6, 4
    on_labels = torch.rand(n, N, generator=g, dtype=torch.float64) / N
    classes = torch.randint(0, 3, (n, N), generator=g)
    return on_labels, classes, classes[torch.arange(n), torch.randint(0, N, (n,), generator=g)]


register(
    Exercise(
        "3.2",
        "the target-label attention TILA2",
        "target_label_attention(on_labels: (n, N), classes: (n, N), query_class: (n,)) -> a number",
        ihm.target_label_attention,
        _known_tila2,
        _random_tila2,
    )
)

register(
    Exercise(
        "3.3",
        "the context-label accuracy CLA",
        "context_label_share(pred: (n,), context_labels: (n, N)) -> a number",
        ihm.context_label_share,
        lambda: [
            Case((torch.tensor([1, 2]), torch.tensor([[1, 3], [4, 5]])), 0.5, "one prediction in its context, one not"),
            Case((torch.tensor([7]), torch.tensor([[7, 7]])), 1.0, "a prediction its context holds twice"),
            Case((torch.tensor([0]), torch.tensor([[1, 2]])), 0.0, "a prediction its context does not hold"),
        ],
        lambda g: (torch.randint(0, 6, (10,), generator=g), torch.randint(0, 6, (10, 3), generator=g)),
    )
)


def _known_rank_one() -> list[Case]:
    eye = torch.eye(2, dtype=torch.float64)
    return [
        Case(
            (eye, _f64([[1.0, 1.0]]), _f64([[1.0, 0.0]])),
            _f64([[[0.0, 0.0], [1.0, 0.0]]]),
            "W = I, A(C, x) = (1, 1), A(x) = (1, 0)",
        ),
        Case(
            (eye, _f64([[2.0, 2.0]]), _f64([[2.0, 0.0]])),
            _f64([[[0.0, 0.0], [1.0, 0.0]]]),
            "the same, twice as long: the patch divides by ||A(x)||^2",
        ),
        Case(
            (2 * eye, _f64([[0.0, 3.0]]), _f64([[0.0, 3.0]])),
            torch.zeros(1, 2, 2, dtype=torch.float64),
            "a context that changes nothing: no patch",
        ),
    ]


def _random_patch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )


register(
    Exercise(
        "4.1",
        "the rank-1 patch",
        "rank_one_update(W: (h, m), a_full: (n, m), a_reduced: (n, m)) -> (n, h, m): "
        "dW = (W (a_full - a_reduced)) a_reducedᵀ / ‖a_reduced‖²",
        cxp.rank_one_update,
        _known_rank_one,
        _random_patch,
    )
)


def _trajectory(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    return cxp.prop31_weights(W0, prefixes)


register(
    Exercise(
        "4.2",
        "the token-by-token weights",
        "prop31_weights(W0: (h, m), prefixes: (n, N + 1, m)) -> (n, N + 1, h, m): W_i = W0 + dW(c_1..c_i), with "
        "prefixes[:, i] = A(c_1..c_i, x) and prefixes[:, 0] = A(x)",
        cxp.prop31_weights,
        lambda: [
            Case(
                (torch.eye(2, dtype=torch.float64), _f64([[[1.0, 0.0], [1.0, 1.0]]])),
                _f64([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]]]),
                "W0 = I, A(x) = (1, 0), one context token moving it to (1, 1)",
            ),
            Case(
                (torch.eye(2, dtype=torch.float64), _f64([[[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]])),
                torch.eye(2, dtype=torch.float64).expand(1, 3, 2, 2),
                "two context tokens that change nothing: W stays W0",
            ),
        ],
        lambda g: (
            torch.randn(3, 4, generator=g, dtype=torch.float64),
            torch.randn(2, 5, 4, generator=g, dtype=torch.float64),
        ),
    )
)


def _known_static() -> list[Case]:
    eye = torch.eye(2, dtype=torch.float64)
    a_red = _f64([[1.0, 0.0], [0.0, 1.0]])
    return [
        Case(
            (eye, _f64([[1.0, 1.0]]), _f64([[1.0, 0.0]])),
            _f64([[0.0, 0.0], [1.0, 0.0]]),
            "one calibration query: the rank-1 patch",
        ),
        Case(
            (eye, a_red + _f64([[0.0, 1.0], [1.0, 0.0]]), a_red),
            _f64([[0.0, 1.0], [1.0, 0.0]]),
            "two calibration queries along the axes, each pushed toward the other",
        ),
    ]


register(
    Exercise(
        "4.3",
        "a static patch for a whole context",
        "static_patch(W: (h, m), a_full: (K, m), a_reduced: (K, m)) -> (h, m): the minimum-norm dW_s with "
        "dW_s A(x_k) = W (A(C, x_k) - A(x_k)) for every calibration query k (least squares where none fits all)",
        cxp.static_patch,
        _known_static,
        lambda g: (
            torch.randn(5, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 4, generator=g, dtype=torch.float64),
        ),
    )
)


def _random_pairs(g: torch.Generator, n: int = 5, N: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    att2 = _rand_attention(g, n, 2 * N + 1)
    classes = torch.randint(0, 3, (n, N), generator=g)
    query = classes[torch.arange(n), torch.randint(0, N, (n,), generator=g)]  # the query's class is in its context
    return att2, classes, query


register(
    Exercise(
        "5.1",
        "attention on the query's class",
        "class_share(att2: (n, 2N + 1) rows summing to 1, classes: (n, N), query_class: (n,)) -> (n,)",
        lenses.class_share,
        lambda: [
            Case(
                (torch.full((1, 5), 0.2, dtype=torch.float64), torch.tensor([[7, 3]]), torch.tensor([7])),
                torch.tensor([0.4]),
                "uniform attention over 2 pairs and the query, the first pair matching",
            ),
            Case(
                (
                    torch.tensor([[0.0, 0.0, 0.3, 0.7, 0.0]], dtype=torch.float64),
                    torch.tensor([[7, 3]]),
                    torch.tensor([3]),
                ),
                torch.tensor([1.0]),
                "all attention on the matching pair's item and label",
            ),
            Case(
                (
                    torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64),
                    torch.tensor([[7, 3]]),
                    torch.tensor([3]),
                ),
                torch.tensor([0.0]),
                "all attention on the query itself",
            ),
        ],
        _random_pairs,
    )
)


def _known_selectivity() -> list[Case]:
    e = torch.eye(3, dtype=torch.float64)
    return [
        Case(
            (e[0][None], torch.stack([e[0], e[1]])[None], torch.tensor([[True, False]])),
            torch.tensor([1.0]),
            "a shift along the matching label's, orthogonal to the other",
        ),
        Case(
            (e[0][None], torch.stack([e[1], e[0]])[None], torch.tensor([[True, False]])),
            torch.tensor([-1.0]),
            "a shift along the other label's",
        ),
        Case(
            (2 * e[0][None], torch.stack([e[0], -e[0], e[2]])[None], torch.tensor([[True, False, False]])),
            torch.tensor([1.5]),
            "cosines 1 with the match, -1 and 0 with the others",
        ),
    ]


register(
    Exercise(
        "5.2",
        "the patch's selectivity",
        "selectivity(shift: (n, h), label_shift: (n, N, h), match: (n, N) bool) -> (n,)",
        lenses.selectivity,
        _known_selectivity,
        lambda g: (
            torch.randn(4, 6, generator=g, dtype=torch.float64),
            torch.randn(4, 3, 6, generator=g, dtype=torch.float64),
            torch.tensor([[True, False, False], [False, True, False], [True, False, True], [False, False, True]]),
        ),
    )
)


def _share_case(g: torch.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    full = (torch.rand(40, generator=g) < 0.9).double().numpy()
    alone = (torch.rand(40, generator=g) < 0.1).double().numpy()
    part = (torch.rand(40, generator=g) < 0.5).double().numpy()
    return full, alone, part


register(
    Exercise(
        "5.3",
        "the share of the gap a patch closes",
        "share_of_gap(full: (n,), alone: (n,), part: (n,) accuracies 0/1) -> a number (NaN if the gap is < 0.05)",
        lenses.share_of_gap,
        lambda: [
            Case((np.ones(4), np.zeros(4), np.array([1.0, 1.0, 0.0, 0.0])), 0.5, "a full gap, half of it closed"),
            Case((np.ones(4), np.zeros(4), np.zeros(4)), 0.0, "nothing closed"),
            Case(
                (np.array([1.0, 1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0])),
                1.0,
                "all of a partial gap closed",
            ),
            Case((np.ones(4), np.ones(4), np.ones(4)), math.nan, "no gap at all (the answer is NaN)"),
        ],
        _share_case,
    )
)


def chapter_exercises(chapter: str) -> Sequence[Exercise]:
    """The exercises of chapter ``chapter`` (``"01"`` ... ``"05"``), in order."""
    return [ex for name, ex in sorted(EXERCISES.items()) if name.split(".")[0] == str(int(chapter))]
