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

The record
----------
:meth:`Ledger.finish` writes the rows to ``<records>/ch<NN>-<profile>.json`` (``ICLBOOK_RECORDS``,
default ``<ICLBOOK_CACHE>/records``), schema :data:`SCHEMA`::

    {"schema": "iclbook.ledger/1", "chapter": "04", "source": "Dherin et al. 2025",
     "page": "book/04_contextual_blocks", "profile": "book", "seed": 0, "library": "0.1.0",
     "torch": "2.13.0", "created": "2026-12-02T19:00:00+00:00", "seconds": 61.2,
     "rows": [{"key": "...", "kind": "claim", "claim": "...", "paper": "...", "ours": "...",
               "value": 0.42, "interval": [0.40, 0.45] | null, "criterion": "...",
               "verdict": "reproduced", "reason": "" , "section": "sec-ch4-finetune" | null}, ...]}

``key`` identifies a row across builds (the claim text unless a chapter gives one). The book's
"Claims at a glance" page (:func:`verdict_counts`, :func:`claims_table`, :func:`identity_table`) and the verdict regression test read these files;
``benchmarks/seeds.py`` (``make seeds``) gathers them over seeds into a seed table
(:func:`seed_table`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SCHEMA = "iclbook.ledger/1"
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


def between(lo: float, hi: float, *, partly: tuple[float, float] | None = None,
            what: str = "ours") -> Criterion:
    """Reproduced when ``lo <= value <= hi``; partly inside the wider band ``partly``."""
    if lo > hi:
        raise ValueError(f"empty band [{lo}, {hi}]")
    if partly is not None and not (partly[0] <= lo and hi <= partly[1]):
        raise ValueError(f"the partly band {partly} must contain [{lo}, {hi}]")
    text = f"{_fmt(lo)} ≤ {what} ≤ {_fmt(hi)}" + (
        f" (partly in [{_fmt(partly[0])}, {_fmt(partly[1])}])" if partly is not None else "")
    return Criterion(text, "between", (float(lo), float(hi)),
                     None if partly is None else (float(partly[0]), float(partly[1])))


def holds(text: str, ok: bool, *, partly: bool = False) -> Criterion:
    """A compound condition computed in the chapter from numbers (``ok``, and optionally a weaker
    ``partly``), stated in words by ``text``. Reproduced when ``ok``, partly when ``partly``."""
    return Criterion(text, "holds", ok=bool(ok), ok_partly=bool(partly))


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

    @property
    def failed(self) -> bool:
        return self.verdict == FAILS


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
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.chapter = str(self.chapter)
        if not (len(self.chapter) == 2 and self.chapter.isdigit()):
            raise ValueError(f"chapter must be two digits such as '04', got {self.chapter!r}")

    # -- recording ------------------------------------------------------------------------------

    def _add(self, row: Row) -> Row:
        """Keep one row per key: re-running a cell replaces its earlier row."""
        self.rows = [r for r in self.rows if r.key != row.key]
        self.rows.append(row)
        return row

    def identity(self, claim: str, *, gap: float, tol: float, paper: str = "exact identity",
                 ours: str = "", section: str | None = None, key: str = "") -> Row:
        """An algebraic identity, checked as ``gap <= tol`` (a NaN gap fails). Fails the build."""
        gap_f = _number(gap)
        ok = gap_f is not None and math.isfinite(gap_f) and gap_f <= tol
        text = (ours + "; " if ours else "") + f"max gap {gap_f:.1e}"
        row = self._add(Row("identity", claim, paper, text, f"gap ≤ {tol:.0e}", HOLDS if ok else FAILS,
                            value=gap_f, section=section, key=key))
        if not ok:
            raise AssertionError(f"identity failed (a bug): {claim} (gap {gap_f}, tolerance {tol})")
        return row

    def sanity(self, claim: str, *, ok: bool, ours: str, criterion: str, paper: str = "",
               value: float | None = None, section: str | None = None, key: str = "") -> Row:
        """Training converged, data as specified...: ``ok`` computed from numbers. Fails the build."""
        row = self._add(Row("sanity", claim, paper, ours, criterion, HOLDS if ok else FAILS,
                            value=_number(value), section=section, key=key))
        if not ok:
            raise AssertionError(f"sanity check failed: {claim} (ours: {ours}; needed: {criterion})")
        return row

    def _evidence(self, kind: str, claim: str, *, paper: str, ours: str, criterion: Criterion,
                  value: float | None, interval: tuple[float, float] | None,
                  inconclusive: str | None, section: str | None, key: str) -> Row:
        if not isinstance(criterion, Criterion):
            raise TypeError("criterion must be a ledger.Criterion (at_least, at_most, between, holds)")
        verdict = "inconclusive" if inconclusive else criterion.verdict(_number(value))
        return self._add(Row(kind, claim, paper, ours, criterion.text, verdict, value=_number(value),
                             interval=interval, reason=inconclusive or "", section=section, key=key))

    def claim(self, claim: str, *, paper: str, ours: str, criterion: Criterion,
              value: float | None = None, interval: tuple[float, float] | None = None,
              inconclusive: str | None = None, section: str | None = None, key: str = "") -> Row:
        """A claim of the paper; the verdict is ``criterion``'s on ``value``. Never fails.

        ``inconclusive``: a reason, computed in the chapter, why the measurement cannot decide
        (the verdict is then ``inconclusive`` whatever the number)."""
        return self._evidence("claim", claim, paper=paper, ours=ours, criterion=criterion, value=value,
                              interval=interval, inconclusive=inconclusive, section=section, key=key)

    def control(self, claim: str, *, paper: str, ours: str, criterion: Criterion,
                value: float | None = None, interval: tuple[float, float] | None = None,
                inconclusive: str | None = None, section: str | None = None, key: str = "") -> Row:
        """A critique or negative control, stated as what it would show; computed like a claim."""
        return self._evidence("control", claim, paper=paper, ours=ours, criterion=criterion, value=value,
                              interval=interval, inconclusive=inconclusive, section=section, key=key)

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
            out.append(table(["#", "kind", "claim", "paper", "ours", "criterion", "verdict"],
                             [[i, r.kind, r.claim, r.paper, _ours(r), r.criterion, _verdict_cell(r)]
                              for i, r in enumerate(evidence, 1)]))
        if checks:
            out += ["", "Identities (hold by algebra for any weights: a failure is a bug) and sanity checks "
                    "(the experiment ran as designed). Both must hold, or the build fails; neither is "
                    "evidence for the paper.", "",
                    table(["#", "kind", "check", "ours", "criterion", "result"],
                          [[i, r.kind, r.claim, r.ours, r.criterion, r.verdict] for i, r in enumerate(checks, 1)])]
        return "\n".join(out)

    def record(self) -> dict[str, Any]:
        """The JSON-able record of this chapter's execution (schema :data:`SCHEMA`)."""
        import torch  # noqa: PLC0415  (keeps the ledger importable without torch for tools)

        import iclbook
        from iclbook import runtime

        return _clean({
            "schema": SCHEMA,
            "chapter": self.chapter,
            "source": self.source,
            "page": self.page,
            "profile": runtime.profile(),
            "seed": runtime.seed(),
            "library": iclbook.__version__,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self.started, 1),
            "rows": [asdict(r) for r in self.rows],
        })

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
            raise AssertionError("an identity or sanity check failed: " +
                                 "; ".join(r.claim for r in self.rows if r.failed))
        c = self.counts()
        n_checks = sum(r.kind not in EVIDENCE_KINDS for r in self.rows)
        from iclbook import runtime  # noqa: PLC0415

        line = (f"{sum(c.values())} claims and controls: " + ", ".join(f"{n} {v}" for v, n in c.items() if n)
                + f"; {n_checks} identities and sanity checks hold. Chapter executed in "
                f"{time.perf_counter() - self.started:.0f} s at profile {runtime.profile()!r}, seed {runtime.seed()}.")
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


def _verdict_cell(r: Row | Mapping[str, Any]) -> str:
    get = r.get if isinstance(r, Mapping) else (lambda k: getattr(r, k))
    verdict, reason = get("verdict"), get("reason")
    return f"**{verdict}**" + (f" ({reason})" if reason else "")  # escaped by table()


# ---------------------------------------------------------------------------------------------
# Records: where they live, and what reads them
# ---------------------------------------------------------------------------------------------


def records_dir() -> Path:
    """Folder of the ledger records: ``ICLBOOK_RECORDS``, else ``<ICLBOOK_CACHE>/records``."""
    forced = os.environ.get("ICLBOOK_RECORDS", "").strip()
    if forced:
        return Path(forced).expanduser()
    from iclbook import runtime  # noqa: PLC0415

    return runtime.cache_dir() / "records"


def load_records(folder: str | Path | None = None, profile: str | None = None) -> list[dict[str, Any]]:
    """Every chapter record in ``folder`` (default :func:`records_dir`), sorted by chapter;
    only those of ``profile`` when given. A file that is not a ledger record raises ValueError."""
    folder = Path(folder) if folder is not None else records_dir()
    out = []
    for path in sorted(folder.glob("ch[0-9][0-9]-*.json")):
        rec = json.loads(path.read_text())
        if rec.get("schema") != SCHEMA:
            raise ValueError(f"{path} is not a ledger record (schema {rec.get('schema')!r}, expected {SCHEMA!r})")
        if profile is None or rec["profile"] == profile:
            out.append(rec)
    return sorted(out, key=lambda r: r["chapter"])


def verdicts(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{chapter: {row key: verdict}}`` of every row (identities and sanity checks included)."""
    return {rec["chapter"]: {r["key"]: r["verdict"] for r in rec["rows"]} for rec in records}


def compare_verdicts(expected: Mapping[str, Mapping[str, str]],
                     actual: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The differences between two :func:`verdicts` maps, one readable line each (empty: same).

    Only verdicts are compared: a number that moved within its criterion is not a difference."""
    lines = []
    for ch in sorted(set(expected) | set(actual)):
        if ch not in actual:
            lines.append(f"chapter {ch}: no record from this build (expected {len(expected[ch])} rows)")
            continue
        if ch not in expected:
            lines.append(f"chapter {ch}: new chapter, {len(actual[ch])} rows not in the expected record")
            continue
        exp, act = expected[ch], actual[ch]
        for key in exp:
            if key not in act:
                lines.append(f"chapter {ch}: row removed: {key!r} (was {exp[key]})")
            elif exp[key] != act[key]:
                lines.append(f"chapter {ch}: {key!r}: {exp[key]} -> {act[key]}")
        for key in act:
            if key not in exp:
                lines.append(f"chapter {ch}: new row: {key!r} ({act[key]})")
    return lines


# ---------------------------------------------------------------------------------------------
# The dashboard and the seed table
# ---------------------------------------------------------------------------------------------


def _link(rec: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    if row.get("section"):
        return f"{{ref}}`§ <{row['section']}>`"
    if rec.get("page"):
        return f"{{doc}}`§ </{rec['page']}>`"
    return ""


def seed_table(per_seed: Mapping[int, Sequence[Mapping[str, Any]]], *, profile: str,
               about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Gather records of several seeds (``{seed: [records]}``) into one seed table: for each
    chapter and claim/control row, the verdict per seed and the spread of our value."""
    seeds = sorted(per_seed)
    table: dict[str, dict[str, Any]] = {}
    for s in seeds:
        for rec in per_seed[s]:
            ch = table.setdefault(rec["chapter"], {})
            for r in rec["rows"]:
                if r["kind"] not in EVIDENCE_KINDS:
                    continue
                entry = ch.setdefault(r["key"], {"kind": r["kind"], "claim": r["claim"], "verdicts": {},
                                                  "values": {}})
                entry["verdicts"][str(s)] = r["verdict"]
                entry["values"][str(s)] = r["value"]
    for ch in table.values():
        for entry in ch.values():
            vals = [v for v in entry["values"].values() if v is not None and math.isfinite(v)]
            entry["spread"] = [min(vals), max(vals)] if vals else None
    return _clean({"schema": SCHEMA + "/seeds", "profile": profile, "seeds": seeds, **(about or {}),
                   "chapters": table})


def _tally(verdict_list: Iterable[str]) -> str:
    """``["reproduced", "reproduced", "partly"]`` -> ``"2 R, 1 P"``."""
    short = {"reproduced": "R", "partly": "P", "not reproduced": "N", "inconclusive": "I"}
    counts: dict[str, int] = {}
    for v in verdict_list:
        counts[v] = counts.get(v, 0) + 1
    order = list(VERDICTS) + ["missing"]
    return ", ".join(f"{n} {short.get(v, v)}" for v, n in sorted(counts.items(), key=lambda kv: order.index(kv[0])
                                                                  if kv[0] in order else len(order)))


def missing_chapters(records: Sequence[Mapping[str, Any]], chapters: Iterable[str]) -> list[str]:
    """The chapter numbers in ``chapters`` that have no record among ``records``."""
    have = {r["chapter"] for r in records}
    return sorted(set(chapters) - have)


def verdict_counts(records: Sequence[Mapping[str, Any]], titles: Mapping[str, str] | None = None) -> str:
    """One Markdown row per chapter: how many claims and controls, their verdicts, and the
    identities (how many, worst gap) and sanity checks."""
    titles = titles or {}
    out = []
    for rec in records:
        rows = rec["rows"]
        ev = [r for r in rows if r["kind"] in EVIDENCE_KINDS]
        ids = [r for r in rows if r["kind"] == "identity"]
        gaps = [r["value"] for r in ids if r["value"] is not None]
        name = titles.get(rec["chapter"], rec["chapter"])
        link = f"{{doc}}`{name} </{rec['page']}>`" if rec.get("page") else name
        ident = f"{len(ids)} ({max(gaps):.0e})" if gaps else f"{len(ids)}"
        out.append([link, rec["source"], f"{rec['profile']}, {rec['seed']}", sum(r["kind"] == "claim" for r in rows),
                    sum(r["kind"] == "control" for r in rows), *(sum(r["verdict"] == v for r in ev) for v in VERDICTS),
                    ident, sum(r["kind"] == "sanity" for r in rows)])
    return table(["chapter", "paper", "profile, seed", "claims", "controls", *VERDICTS, "identities (worst gap)",
                  "sanity checks"], out)


def claims_table(records: Sequence[Mapping[str, Any]], seeds: Mapping[str, Any] | None = None) -> str:
    """Every claim and control of every chapter, one Markdown row each, linked to its section;
    with a seed table, the verdicts over its seeds and the spread of our value."""
    seed_chapters = (seeds or {}).get("chapters", {})
    seed_list = (seeds or {}).get("seeds", [])
    header = ["ch.", "kind", "claim", "paper", "ours", "criterion", "verdict"]
    if seed_list:
        header += ["over seeds", "spread of ours"]
    out = []
    for rec in records:
        for r in rec["rows"]:
            if r["kind"] not in EVIDENCE_KINDS:
                continue
            row = [f"{rec['chapter']} {_link(rec, r)}", r["kind"], r["claim"], r["paper"], _ours(r), r["criterion"],
                   _verdict_cell(r)]
            if seed_list:
                entry = seed_chapters.get(rec["chapter"], {}).get(r["key"])
                if entry is None:
                    row += ["(not in the seed run)", ""]
                else:
                    per = [entry["verdicts"].get(str(s), "missing") for s in seed_list]
                    spread = entry.get("spread")
                    row += [_tally(per), f"{spread[0]:.3g} to {spread[1]:.3g}" if spread else ""]
            out.append(row)
    return table(header, out)


def identity_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The identities, summarised per chapter: how many, the worst gap against its tolerance."""
    out = []
    for rec in records:
        ids = [r for r in rec["rows"] if r["kind"] == "identity" and r["value"] is not None]
        if not ids:
            out.append([rec["chapter"], 0, "", ""])
            continue
        worst = max(ids, key=lambda r: r["value"])
        out.append([rec["chapter"], len(ids), f"{worst['value']:.1e} ({worst['criterion']})", worst["claim"]])
    return table(["ch.", "identities", "worst gap", "its check"], out)


def seed_run_summary(seeds: Mapping[str, Any]) -> str:
    """One sentence on where a seed table comes from."""
    keys = ("created", "machine", "library", "commit", "torch")
    about = ", ".join(f"{k} {seeds[k]}" for k in keys if seeds.get(k))
    kept = seeds.get("kept") or {}
    earlier = "".join(f"; chapter {ch} from an earlier run ({v.get('created')}, commit {v.get('commit')})"
                      for ch, v in sorted(kept.items()))
    dropped = "".join(f" Chapter {ch} is not in it: {why}." for ch, why in sorted((seeds.get("dropped") or {}).items()))
    return (f"Seed table: profile `{seeds['profile']}`, seeds {', '.join(str(s) for s in seeds['seeds'])}"
            + (f"; {about}" if about else "") + earlier + "." + dropped)


def runtime_line(chapter: str, path: str | Path = Path("records") / "seeds-book.json") -> str:
    """One line for a chapter's opening: how long the whole chapter took in the committed seed
    run (the median over its seeds, robust to a run slowed by other work on the machine). The seed table
    lives beside the book, so outside a checkout (Colab) the line says where to look instead."""
    path = Path(path)
    if not path.exists():
        return "Run time: see benchmarks/README.md of the book's repository."
    seeds = json.loads(path.read_text())
    secs = sorted((seeds.get("seconds") or {}).get(chapter, {}).values())
    if not secs:
        return f"Run time: chapter {chapter} is not in the seed run ({path}); see benchmarks/README.md."
    created = ((seeds.get("kept") or {}).get(chapter) or {}).get("created") or seeds.get("created")
    mid = secs[len(secs) // 2] if len(secs) % 2 else (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2
    return (f"Run time: about {mid:.0f} s at the {seeds['profile']} profile on {seeds.get('machine', 'this machine')} "
            f"(median of {len(secs)} seeds in the seed run of {str(created)[:10]}); "
            "the paper profile on a GPU: benchmarks/README.md.")


# ---------------------------------------------------------------------------------------------
# Command line: refresh the committed record of expected verdicts
# ---------------------------------------------------------------------------------------------


def expected_record(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The committed record of expected verdicts made from a build's records."""
    seeds = sorted({r["seed"] for r in records})
    profiles = sorted({r["profile"] for r in records})
    return {"schema": SCHEMA + "/verdicts", "profile": profiles[0] if len(profiles) == 1 else profiles,
            "seed": seeds[0] if len(seeds) == 1 else seeds, "chapters": verdicts(records)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iclbook.ledger verdicts --records DIR --out FILE [--profile book]``: write the
    expected verdicts of a build (``make verdicts``); ``diff`` prints what changed instead."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m iclbook.ledger", description=main.__doc__)
    parser.add_argument("command", choices=("verdicts", "diff"))
    parser.add_argument("--records", required=True, help="folder of a build's ledger records")
    parser.add_argument("--out", required=True, help="the expected-verdicts file (tests/verdicts-book.json)")
    parser.add_argument("--profile", default="book")
    args = parser.parse_args(argv)
    records = load_records(args.records, profile=args.profile)
    if not records:
        print(f"no {args.profile!r} records in {args.records}")
        return 2
    out = Path(args.out)
    if args.command == "diff":
        if not out.exists():
            print(f"{out} does not exist yet")
            return 2
        lines = compare_verdicts(json.loads(out.read_text())["chapters"], verdicts(records))
        print("\n".join(lines) if lines else "no verdict changed")
        return 1 if lines else 0
    old = json.loads(out.read_text())["chapters"] if out.exists() else {}
    for line in compare_verdicts(old, verdicts(records)):
        print(line)
    out.write_text(json.dumps(expected_record(records), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({sum(len(r['rows']) for r in records)} rows, {len(records)} chapters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
