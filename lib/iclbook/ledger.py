"""The claims ledger: one row per claim a chapter covers, each with a kind and a computed verdict.

Every check cell of a chapter records one row in the ledger that :func:`iclbook.chapter.start`
opened (``LEDGER = ch.ledger``)::

    LEDGER = ledger.Ledger("04", "Dherin et al. 2025")   # what chapter.start does
    LEDGER.identity("Thm 2.2: context == rank-1 patch", gap=gap, tol=1e-10,
                    paper="exact identity", section="sec-ch4-theorem")
    LEDGER.claim("Fig. 3: finetuning and the patch fall in a similar pattern",
                 paper="similar pattern", ours=f"half-drop index {k_ft} vs {k_dw}",
                 value=k_ft / k_dw, criterion=ledger.at_most(2.0, partly=4.0, what="ratio of half-drop indices"),
                 section="sec-ch4-finetune")
    ...
    LEDGER.finish()   # the table, the JSON record, one summary line (ch.finish() calls it)

Kinds
-----
``identity``
    Holds by algebra whatever the weights (Theorem 2.2's patch, the dual form of linear attention,
    a fast forward pass against its direct form). A failure is a bug, so the build fails
    (``AssertionError``). An identity is *not* evidence for a paper: it would hold for any network.
``sanity``
    Training converged, the data are as specified, a model uses its context. A failure means the
    experiment did not run as designed, so the build fails too.
``claim``
    A claim of the paper. Its verdict is computed by the row's :class:`Criterion` from our number:
    ``reproduced``, ``partly``, ``not reproduced`` or ``inconclusive``. It never fails the build:
    a claim that does not reproduce is a result, and the chapter reports it.
``control``
    A published critique or a negative control (an untrained model, a shuffled baseline, the
    official code's way of computing a metric). Its row states what the control would show, and
    its verdict, computed the same way, says whether our numbers bear the statement out.

No verdict is typed in a chapter: a claim row passes a number and a criterion, or, where the test
is a compound condition, :func:`holds` with the booleans computed from numbers. A row can be
declared ``inconclusive`` with a computed reason (a statistic at its ceiling cannot be told from
its null), which the record keeps.

Nulls, ceilings and rivals
--------------------------
Every claim and control row is read against its **null**: what a model or statistic *without*
the claimed mechanism scores on the same measurement, in the same run (an untrained or
label-shuffled model, random masks averaged over many draws, a random mix, a heuristic reader, a
no-op update)::

    LEDGER.claim("...", ..., value=ours, criterion=ledger.at_least(0.9, what="cos"),
                 null=ledger.null("random non-negative mix, 200 draws", value=0.84, interval=(0.7, 0.95)))

The row's own criterion is applied to the null, and the page shows that verdict beside ours. A
null that the criterion calls ``reproduced`` is a row that cannot fail, and recording it raises
``AssertionError``, like a broken sanity check: fix the criterion, never the null. (A row declared
``inconclusive`` takes no verdict from its criterion and does not raise; its null's verdict is
still recorded, and the records test refuses any book-profile row whose null passes.) For a
:func:`holds` criterion the chapter applies its rule to the null's numbers (``passes=``). A row
with no meaningful null says why (``no_null="..."``); a row must give one or the other.

A **ceiling** (``ceiling=ledger.ceiling("optimal reader of the non-cue words", 0.31)``) is the best
any reader of the data can score; a criterion the ceiling fails cannot pass, and raises too.
:func:`share` states a number as its share of the room between null and ceiling.

**Rivals** (``rivals={"alpha^-1": -1.0}``) are the values the paper argues against; each is
recorded as excluded by the row's interval or not, and a row whose interval keeps a rival is
``inconclusive`` (with that reason) instead of ``reproduced`` or ``partly``: a claim is reproduced
only where the data tell it from its rival.

The record
----------
:meth:`Ledger.finish` writes the rows to ``<records>/ch<NN>-<profile>.json`` (``ICLBOOK_RECORDS``,
default ``<ICLBOOK_CACHE>/records``), schema :data:`SCHEMA`::

    {"schema": "iclbook.ledger/2", "chapter": "04", "source": "Dherin et al. 2025",
     "page": "book/04_contextual_blocks", "profile": "book", "seed": 0, "library": "0.1.0",
     "torch": "2.13.0", "created": "2026-12-02T19:00:00+00:00", "seconds": 61.2,
     "rows": [{"key": "...", "kind": "claim", "claim": "...", "paper": "...", "ours": "...",
               "value": 0.42, "interval": [0.40, 0.45] | null, "criterion": "...",
               "verdict": "reproduced", "reason": "" , "section": "sec-ch4-finetune" | null,
               "null": 0.1, "null_interval": [...] | null, "null_what": "untrained block",
               "null_verdict": "not reproduced", "no_null": "", "ceiling": null, "ceiling_what": "",
               "rivals": [{"name": "alpha^-1", "value": -1.0, "excluded": true}]}, ...]}

``key`` identifies a row across builds (the claim text unless a chapter gives one). What reads
these files lives in :mod:`iclbook.records`: the book's "Claims at a glance" page, the verdict
regression test, the seed table that ``benchmarks/seeds.py`` (``make seeds``) gathers over seeds,
and the command line that refreshes the expected verdicts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "iclbook.ledger/2"
KINDS = ("identity", "sanity", "claim", "control")
EVIDENCE_KINDS = ("claim", "control")
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")
HOLDS, FAILS = "holds", "FAILS"


# ---------------------------------------------------------------------------------------------
# Criteria: a number in, a verdict out
# ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Criterion:
    """A rule from our number to a verdict, with its statement in words (:attr:`text`).

    Build one with :func:`at_least`, :func:`at_most`, :func:`between` or :func:`holds`.
    """

    text: str
    kind: str  # "at_least" | "at_most" | "between" | "holds"
    bound: float | tuple[float, float] | None = None
    partly: float | tuple[float, float] | None = None
    ok: bool | None = None
    ok_partly: bool | None = None

    def verdict(self, value: float | None) -> str:
        """``reproduced`` / ``partly`` / ``not reproduced``; ``inconclusive`` for a missing or
        non-finite number (a run that never crossed, a ratio of zeros)."""
        if self.kind == "holds":
            return "reproduced" if self.ok else "partly" if self.ok_partly else "not reproduced"
        if value is None or not math.isfinite(float(value)):
            return "inconclusive"
        value = float(value)
        if self._passes(value, self.bound):
            return "reproduced"
        if self.partly is not None and self._passes(value, self.partly):
            return "partly"
        return "not reproduced"

    def _passes(self, value: float, bound: Any) -> bool:
        if self.kind == "at_least":
            return value >= bound
        if self.kind == "at_most":
            return value <= bound
        lo, hi = bound
        return lo <= value <= hi


def at_least(bound: float, *, partly: float | None = None, what: str = "ours") -> Criterion:
    """Reproduced when ``value >= bound``; partly when ``value >= partly``."""
    if partly is not None and partly > bound:
        raise ValueError(f"the partly bound {partly} must not exceed the bound {bound}")
    text = f"{what} ≥ {_fmt(bound)}" + (f" (partly ≥ {_fmt(partly)})" if partly is not None else "")
    return Criterion(text, "at_least", float(bound), None if partly is None else float(partly))


def at_most(bound: float, *, partly: float | None = None, what: str = "ours") -> Criterion:
    """Reproduced when ``value <= bound``; partly when ``value <= partly``."""
    if partly is not None and partly < bound:
        raise ValueError(f"the partly bound {partly} must not be below the bound {bound}")
    text = f"{what} ≤ {_fmt(bound)}" + (f" (partly ≤ {_fmt(partly)})" if partly is not None else "")
    return Criterion(text, "at_most", float(bound), None if partly is None else float(partly))


def between(lo: float, hi: float, *, partly: tuple[float, float] | None = None, what: str = "ours") -> Criterion:
    """Reproduced when ``lo <= value <= hi``; partly inside the wider band ``partly``."""
    if lo > hi:
        raise ValueError(f"empty band [{lo}, {hi}]")
    if partly is not None and not (partly[0] <= lo and hi <= partly[1]):
        raise ValueError(f"the partly band {partly} must contain [{lo}, {hi}]")
    text = f"{_fmt(lo)} ≤ {what} ≤ {_fmt(hi)}" + (
        f" (partly in [{_fmt(partly[0])}, {_fmt(partly[1])}])" if partly is not None else ""
    )
    return Criterion(
        text, "between", (float(lo), float(hi)), None if partly is None else (float(partly[0]), float(partly[1]))
    )


def holds(text: str, ok: bool, *, partly: bool = False) -> Criterion:
    """A compound condition computed in the chapter from numbers (``ok``, and optionally a weaker
    ``partly``), stated in words by ``text``. Reproduced when ``ok``, partly when ``partly``."""
    return Criterion(text, "holds", ok=bool(ok), ok_partly=bool(partly))


# ---------------------------------------------------------------------------------------------
# Nulls, ceilings and rivals: what the row's number is read against
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A value the row's own number is read against: its *null* (what a model or statistic
    without the claimed mechanism scores on the same measurement, in the same run) or its
    *ceiling* (the best any reader of the data can do). Build one with :func:`null` or
    :func:`ceiling`."""

    role: str  # "null" | "ceiling"
    what: str
    value: float | None = None
    interval: tuple[float, float] | None = None
    passes: bool | None = None

    def verdict(self, criterion: Criterion) -> str:
        """The verdict the row's own criterion gives to this reference."""
        if criterion.kind == "holds":
            if self.passes is None:
                raise ValueError(
                    f"a holds() criterion cannot be applied to the {self.role} ({self.what}) by itself: "
                    f"give the chapter's rule applied to it, {self.role}(..., passes=...)"
                )
            return "reproduced" if self.passes else "not reproduced"
        return criterion.verdict(self.value)


def _reference(role: str, what: str, value: Any, interval: Any, passes: bool | None) -> Reference:
    if not str(what).strip():
        raise ValueError(f"a {role} says what it is (an untrained model, random masks over 50 draws...)")
    if value is None and passes is None:
        raise ValueError(f"a {role} needs its value, or for a holds() criterion passes=")
    iv = None if interval is None else tuple(float(x) for x in interval)
    return Reference(role, str(what), _number(value), iv, None if passes is None else bool(passes))


def null(what: str, value: Any = None, *, interval: Any = None, passes: bool | None = None) -> Reference:
    """The row's null: ``what`` (e.g. ``"untrained model"``, ``"random masks, mean of 50 draws"``)
    scores ``value`` (with its ``interval``) on the row's own measurement. For a :func:`holds`
    criterion, ``passes`` is the chapter's own rule applied to the null's numbers."""
    return _reference("null", what, value, interval, passes)


def ceiling(what: str, value: Any = None, *, interval: Any = None, passes: bool | None = None) -> Reference:
    """The row's ceiling: the best ``what`` (an optimal reader of the data...) can score."""
    return _reference("ceiling", what, value, interval, passes)


def share(value: float, null_value: float, ceiling_value: float) -> float:
    """Where ``value`` sits between the null (0) and the ceiling (1): the share of the room above
    chance that a model took. NaN when the null reaches the ceiling (no room to measure)."""
    room = float(ceiling_value) - float(null_value)
    if not math.isfinite(room) or abs(room) < 1e-12:
        return float("nan")
    return (float(value) - float(null_value)) / room


def _fmt_ref(value: float | None, interval: Any) -> str:
    if value is None:
        return ""
    text = f"{value:.3g}"
    if interval is not None:
        text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
    return text


# ---------------------------------------------------------------------------------------------
# Rows and the ledger
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One ledger row; see the module docstring for the meaning of each field."""

    kind: str
    claim: str
    paper: str
    ours: str
    criterion: str
    verdict: str
    value: float | None = None
    interval: tuple[float, float] | None = None
    reason: str = ""
    section: str | None = None
    key: str = ""
    null: float | None = None  # what a model without the mechanism scores (claims and controls)
    null_interval: tuple[float, float] | None = None
    null_what: str = ""
    null_verdict: str = ""  # the row's criterion applied to its null (never "reproduced")
    no_null: str = ""  # why a claim or control has no meaningful null
    ceiling: float | None = None  # the best any reader of the data can score, where one exists
    ceiling_what: str = ""
    rivals: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "value", "excluded"}]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.key:
            self.key = self.claim
        if self.value is not None:
            self.value = float(self.value)
        if self.interval is not None:
            lo, hi = (float(x) for x in self.interval)
            self.interval = (lo, hi)
        if self.null_interval is not None:
            self.null_interval = tuple(float(x) for x in self.null_interval)

    @property
    def failed(self) -> bool:
        return self.verdict == FAILS

    def _repr_markdown_(self) -> str:
        """How a check cell that ends with its ledger call shows the row: one line, the verdict."""
        verdict = f"**{self.verdict}**" + (f" ({self.reason})" if self.reason else "")
        against = _null_cell(self)
        against = f" Null: {against}." if against else ""
        return f"Ledger, {self.kind}: {_cell(self.claim)}: {_cell(self.ours)}.{against} {verdict}"


def _number(x: Any) -> float | None:
    """A plain float from a Python/NumPy/torch scalar (``None`` stays ``None``)."""
    if x is None:
        return None
    return float(x)


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    return x


@dataclass
class Ledger:
    """The rows of one chapter. ``chapter`` is its number (``"04"``), ``source`` the paper."""

    chapter: str
    source: str
    page: str | None = None
    profile: str | None = None  # the profile and seed the chapter runs at (chapter.start passes
    seed: int | None = None  # them; None reads the environment once, here)
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.chapter = str(self.chapter)
        if not (len(self.chapter) == 2 and self.chapter.isdigit()):
            raise ValueError(f"chapter must be two digits such as '04', got {self.chapter!r}")
        if self.profile is None or self.seed is None:
            from iclbook import runtime  # noqa: PLC0415

            self.profile = runtime.profile() if self.profile is None else self.profile
            self.seed = runtime.seed() if self.seed is None else self.seed

    # -- recording ------------------------------------------------------------------------------

    def _add(self, row: Row) -> Row:
        """Keep one row per key: re-running a cell replaces its earlier row."""
        self.rows = [r for r in self.rows if r.key != row.key]
        self.rows.append(row)
        return row

    def identity(
        self,
        claim: str,
        *,
        gap: float,
        tol: float,
        paper: str = "exact identity",
        ours: str = "",
        section: str | None = None,
        key: str = "",
    ) -> Row:
        """An algebraic identity, checked as ``gap <= tol`` (a NaN gap fails). Fails the build."""
        gap_f = _number(gap)
        ok = gap_f is not None and math.isfinite(gap_f) and gap_f <= tol
        text = (ours + "; " if ours else "") + f"max gap {gap_f:.1e}"
        row = self._add(
            Row(
                "identity",
                claim,
                paper,
                text,
                f"gap ≤ {tol:.0e}",
                HOLDS if ok else FAILS,
                value=gap_f,
                section=section,
                key=key,
            )
        )
        if not ok:
            raise AssertionError(f"identity failed (a bug): {claim} (gap {gap_f}, tolerance {tol})")
        return row

    def sanity(
        self,
        claim: str,
        *,
        ok: bool,
        ours: str,
        criterion: str,
        paper: str = "",
        value: float | None = None,
        section: str | None = None,
        key: str = "",
    ) -> Row:
        """Training converged, data as specified...: ``ok`` computed from numbers. Fails the build."""
        row = self._add(
            Row(
                "sanity",
                claim,
                paper,
                ours,
                criterion,
                HOLDS if ok else FAILS,
                value=_number(value),
                section=section,
                key=key,
            )
        )
        if not ok:
            raise AssertionError(f"sanity check failed: {claim} (ours: {ours}; needed: {criterion})")
        return row

    def _evidence(
        self,
        kind: str,
        claim: str,
        *,
        paper: str,
        ours: str,
        criterion: Criterion,
        value: float | None,
        interval: tuple[float, float] | None,
        inconclusive: str | None,
        section: str | None,
        key: str,
        null: Reference | None,
        no_null: str | None,
        ceiling: Reference | None,
        rivals: Mapping[str, float] | None,
    ) -> Row:
        if not isinstance(criterion, Criterion):
            raise TypeError("criterion must be a ledger.Criterion (at_least, at_most, between, holds)")
        if (null is None) == (not no_null):
            raise ValueError(
                f"{kind} {claim!r}: give its null (ledger.null(...): what a model without the claimed "
                "mechanism scores on the same measurement) or, where none is meaningful, no_null='why' "
                "(one of the two, not both)"
            )
        for ref, role in ((null, "null"), (ceiling, "ceiling")):
            if ref is not None and (not isinstance(ref, Reference) or ref.role != role):
                raise TypeError(f"{role}= takes ledger.{role}(...)")
        null_verdict = ""
        if null is not None:
            null_verdict = null.verdict(criterion)
            # a row declared inconclusive takes no verdict from its criterion (a smoke run that
            # cannot judge, a statistic at its ceiling): the null's verdict is recorded and shown,
            # and the records test refuses any book-profile row whose null passes
            if null_verdict == "reproduced" and not inconclusive:
                raise AssertionError(
                    f"{kind} {claim!r}: its null ({null.what}, {_fmt_ref(null.value, null.interval) or 'passes'}) "
                    f"passes its own criterion ({criterion.text}), so the row cannot fail: fix the criterion"
                )
        if ceiling is not None and not inconclusive and (criterion.kind != "holds" or ceiling.passes is not None):
            if ceiling.verdict(criterion) == "not reproduced":
                raise AssertionError(
                    f"{kind} {claim!r}: its ceiling ({ceiling.what}, {_fmt_ref(ceiling.value, ceiling.interval)}) "
                    f"fails its own criterion ({criterion.text}), so the row cannot pass: fix the criterion"
                )
        verdict = "inconclusive" if inconclusive else criterion.verdict(_number(value))
        reason = inconclusive or ""
        rival_rows = []
        if rivals:
            if interval is None:
                raise ValueError(f"{kind} {claim!r}: rivals are judged by the interval: give interval=")
            lo, hi = (float(x) for x in interval)
            for name, rv in rivals.items():
                rival_rows.append({"name": str(name), "value": float(rv), "excluded": not lo <= float(rv) <= hi})
            kept = [r for r in rival_rows if not r["excluded"]]
            if kept and verdict in ("reproduced", "partly"):
                verdict = "inconclusive"
                reason = "the interval does not exclude " + ", ".join(f"{r['name']} ({r['value']:g})" for r in kept)
        return self._add(
            Row(
                kind,
                claim,
                paper,
                ours,
                criterion.text,
                verdict,
                value=_number(value),
                interval=interval,
                reason=reason,
                section=section,
                key=key,
                null=None if null is None else null.value,
                null_interval=None if null is None else null.interval,
                null_what="" if null is None else null.what,
                null_verdict=null_verdict,
                no_null=no_null or "",
                ceiling=None if ceiling is None else ceiling.value,
                ceiling_what="" if ceiling is None else ceiling.what,
                rivals=rival_rows,
            )
        )

    def claim(
        self,
        claim: str,
        *,
        paper: str,
        ours: str,
        criterion: Criterion,
        value: float | None = None,
        interval: tuple[float, float] | None = None,
        inconclusive: str | None = None,
        section: str | None = None,
        key: str = "",
        null: Reference | None = None,
        no_null: str | None = None,
        ceiling: Reference | None = None,
        rivals: Mapping[str, float] | None = None,
    ) -> Row:
        """A claim of the paper; the verdict is ``criterion``'s on ``value``. Never fails.

        ``inconclusive``: a reason, computed in the chapter, why the measurement cannot decide
        (the verdict is then ``inconclusive`` whatever the number)."""
        return self._evidence(
            "claim",
            claim,
            paper=paper,
            ours=ours,
            criterion=criterion,
            value=value,
            interval=interval,
            inconclusive=inconclusive,
            section=section,
            key=key,
            null=null,
            no_null=no_null,
            ceiling=ceiling,
            rivals=rivals,
        )

    def control(
        self,
        claim: str,
        *,
        paper: str,
        ours: str,
        criterion: Criterion,
        value: float | None = None,
        interval: tuple[float, float] | None = None,
        inconclusive: str | None = None,
        section: str | None = None,
        key: str = "",
        null: Reference | None = None,
        no_null: str | None = None,
        ceiling: Reference | None = None,
        rivals: Mapping[str, float] | None = None,
    ) -> Row:
        """A critique or negative control, stated as what it would show; computed like a claim."""
        return self._evidence(
            "control",
            claim,
            paper=paper,
            ours=ours,
            criterion=criterion,
            value=value,
            interval=interval,
            inconclusive=inconclusive,
            section=section,
            key=key,
            null=null,
            no_null=no_null,
            ceiling=ceiling,
            rivals=rivals,
        )

    # -- reading --------------------------------------------------------------------------------

    @property
    def all_passed(self) -> bool:
        """No identity or sanity row failed (claims and controls never fail)."""
        return bool(self.rows) and not any(r.failed for r in self.rows)

    def counts(self) -> dict[str, int]:
        """Verdicts of the claim and control rows."""
        out = {v: 0 for v in VERDICTS}
        for r in self.rows:
            if r.kind in EVIDENCE_KINDS:
                out[r.verdict] += 1
        return out

    def markdown(self) -> str:
        """The ledger as Markdown: claims and controls with criterion and verdict, then the
        identities and sanity checks (which must hold, and are not evidence)."""
        evidence = [r for r in self.rows if r.kind in EVIDENCE_KINDS]
        checks = [r for r in self.rows if r.kind not in EVIDENCE_KINDS]
        out = []
        if evidence:
            out.append(
                table(
                    ["#", "kind", "claim", "paper", "ours", "null", "criterion", "verdict"],
                    [
                        [i, r.kind, r.claim, r.paper, _ours(r), _null_cell(r), r.criterion, _verdict_cell(r)]
                        for i, r in enumerate(evidence, 1)
                    ],
                )
            )
        if checks:
            out += [
                "",
                "Identities (hold by algebra for any weights: a failure is a bug) and sanity checks "
                "(the experiment ran as designed). Both must hold, or the build fails; neither is "
                "evidence for the paper.",
                "",
                table(
                    ["#", "kind", "check", "ours", "criterion", "result"],
                    [[i, r.kind, r.claim, r.ours, r.criterion, r.verdict] for i, r in enumerate(checks, 1)],
                ),
            ]
        return "\n".join(out)

    def record(self) -> dict[str, Any]:
        """The JSON-able record of this chapter's execution (schema :data:`SCHEMA`)."""
        import torch  # noqa: PLC0415  (keeps the ledger importable without torch for tools)

        import iclbook

        return _clean(
            {
                "schema": SCHEMA,
                "chapter": self.chapter,
                "source": self.source,
                "page": self.page,
                "profile": self.profile,
                "seed": self.seed,
                "library": iclbook.__version__,
                "torch": torch.__version__,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - self.started, 1),
                "rows": [asdict(r) for r in self.rows],
            }
        )

    def save(self, folder: str | Path | None = None) -> Path | None:
        """Write :meth:`record` to ``folder`` (default :func:`records_dir`); returns the path, or
        ``None`` (with a printed reason) where the folder cannot be written."""
        rec = self.record()
        path = Path(folder) if folder is not None else records_dir()
        path = path / f"ch{self.chapter}-{rec['profile']}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, indent=1, ensure_ascii=False))
            tmp.replace(path)
        except OSError as err:
            print(f"iclbook: could not write the ledger record at {path}: {err}")
            return None
        return path

    def finish(self) -> None:
        """The chapter's last cell: show the table, save the record, print a summary line.

        Raises ``AssertionError`` if an identity or sanity row failed (they raise when recorded,
        so this only fires when a failing cell was skipped past)."""
        from IPython.display import Markdown, display  # noqa: PLC0415

        display(Markdown(self.markdown()))
        self.save()
        if not self.all_passed:
            raise AssertionError(
                "an identity or sanity check failed: " + "; ".join(r.claim for r in self.rows if r.failed)
            )
        c = self.counts()
        n_checks = sum(r.kind not in EVIDENCE_KINDS for r in self.rows)
        line = (
            f"{sum(c.values())} claims and controls: "
            + ", ".join(f"{n} {v}" for v, n in c.items() if n)
            + f"; {n_checks} identities and sanity checks hold. Chapter executed in "
            f"{time.perf_counter() - self.started:.0f} s at profile {self.profile!r}, seed {self.seed}."
        )
        print(line)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, align: Sequence[str] | None = None) -> str:
    """A Markdown table: every cell as text with ``|`` escaped and line breaks removed (a claim
    text or a task name with a ``|`` would otherwise split its row). ``align`` gives one of
    ``"l"``, ``"r"``, ``"c"`` per column (default: left). Every chapter's tables go through here,
    the ledger's own included."""
    header = [_cell(h) for h in header]
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    align = list(align) if align is not None else ["l"] * len(header)
    if len(align) != len(header) or any(a not in marks for a in align):
        raise ValueError(f"need one of 'l', 'r', 'c' per column ({len(header)}), got {align}")
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {row}")
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(out)


def _ours(r: Row | Mapping[str, Any]) -> str:
    return r["ours"] if isinstance(r, Mapping) else r.ours


def _null_cell(r: Row | Mapping[str, Any]) -> str:
    """The null beside ours (its value, what it is, the verdict our criterion gives it), the
    ceiling where there is one, and the rivals the interval excludes or not."""
    get = r.get if isinstance(r, Mapping) else (lambda k: getattr(r, k, None))
    parts = []
    if get("null_what"):
        value = _fmt_ref(get("null"), get("null_interval"))
        parts.append(
            f"{value} ({get('null_what')}; {get('null_verdict')})"
            if value
            else f"{get('null_what')}: {get('null_verdict')}"
        )
    elif get("no_null"):
        parts.append(f"none: {get('no_null')}")
    if get("ceiling_what"):
        parts.append(f"ceiling {_fmt_ref(get('ceiling'), None)} ({get('ceiling_what')})")
    for rv in get("rivals") or []:
        parts.append(f"{'excludes' if rv['excluded'] else 'does not exclude'} {rv['name']} ({rv['value']:g})")
    return "; ".join(parts)


def _verdict_cell(r: Row | Mapping[str, Any]) -> str:
    get = r.get if isinstance(r, Mapping) else (lambda k: getattr(r, k))
    verdict, reason = get("verdict"), get("reason")
    return f"**{verdict}**" + (f" ({reason})" if reason else "")  # escaped by table()


def records_dir() -> Path:
    """Folder of the ledger records: ``ICLBOOK_RECORDS``, else ``<ICLBOOK_CACHE>/records``."""
    forced = os.environ.get("ICLBOOK_RECORDS", "").strip()
    if forced:
        return Path(forced).expanduser()
    from iclbook import runtime  # noqa: PLC0415

    return runtime.cache_dir() / "records"
