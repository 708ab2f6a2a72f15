"""The chapters' ledger records and what reads them: loading, the verdict regression, the seed
table, the book's "Claims at a glance" page, and the command line that refreshes the committed
expected verdicts.

Every chapter's :class:`iclbook.ledger.Ledger` writes one JSON record per build
(``<ICLBOOK_RECORDS>/ch<NN>-<profile>.json``, schema :data:`iclbook.ledger.SCHEMA`); this module
only reads them::

    records = records.load_records(profile="book")     # every chapter's record, sorted
    records.claims_table(records, seeds)                # the claims page's big table
    python -m iclbook.records verdicts --records DIR --out tests/verdicts-book.json   # make verdicts
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from iclbook.ledger import (
    EVIDENCE_KINDS,
    SCHEMA,
    VERDICTS,
    _clean,
    _null_cell,
    _ours,
    _verdict_cell,
    records_dir,
    table,
)

__all__ = [
    "load_records",
    "verdicts",
    "compare_verdicts",
    "seed_table",
    "merge_seed_tables",
    "seed_chapter",
    "missing_chapters",
    "verdict_counts",
    "claims_table",
    "identity_table",
    "seed_run_summary",
    "runtime_line",
    "expected_record",
    "main",
    "records_dir",
]


# ---------------------------------------------------------------------------------------------
# Records: where they live, and what reads them
# ---------------------------------------------------------------------------------------------


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


def compare_verdicts(expected: Mapping[str, Mapping[str, str]], actual: Mapping[str, Mapping[str, str]]) -> list[str]:
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


def seed_table(
    per_seed: Mapping[int, Sequence[Mapping[str, Any]]], *, profile: str, about: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Gather records of several seeds (``{seed: [records]}``) into a seed table. Each chapter
    keeps its own entry: the seeds it ran at, where and when (``about``: created, machine,
    library, torch, commit; ``seconds``: ``{chapter: {seed: s}}``), and for each claim and control
    row the verdict per seed and the spread of our value. :func:`merge_seed_tables` adds a later
    run of some chapters without losing the others."""
    about = dict(about or {})
    seconds = about.pop("seconds", {}) or {}
    failures = about.pop("failures", []) or []
    chapters: dict[str, dict[str, Any]] = {}
    for s in sorted(per_seed):
        for rec in per_seed[s]:
            ch = chapters.setdefault(rec["chapter"], {"seeds": [], **about, "seconds": {}, "rows": {}})
            if s not in ch["seeds"]:
                ch["seeds"].append(s)
            for r in rec["rows"]:
                if r["kind"] not in EVIDENCE_KINDS:
                    continue
                entry = ch["rows"].setdefault(
                    r["key"],
                    {
                        "kind": r["kind"],
                        "claim": r["claim"],
                        "verdicts": {},
                        "values": {},
                        "nulls": {},
                        "null_verdicts": {},
                    },
                )
                entry["verdicts"][str(s)] = r["verdict"]
                entry["values"][str(s)] = r["value"]
                entry["nulls"][str(s)] = r.get("null")
                entry["null_verdicts"][str(s)] = r.get("null_verdict", "")
    for number, ch in chapters.items():
        ch["seconds"] = dict((seconds or {}).get(number, {}))
        ch["failures"] = [f for f in failures if f.startswith(number)]
        for entry in ch["rows"].values():
            vals = [v for v in entry["values"].values() if v is not None and math.isfinite(v)]
            entry["spread"] = [min(vals), max(vals)] if vals else None
    return _clean({"schema": SCHEMA + "/seeds", "profile": profile, "chapters": chapters})


def merge_seed_tables(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` (a run of some chapters) over ``old``: the chapters just run replace theirs, every
    other chapter of ``old`` stays as it was, with its own seeds and provenance. A table of another
    profile or schema is refused rather than overwritten (it would lose its chapters)."""
    if not old:
        return dict(new)
    for field in ("schema", "profile"):
        if old.get(field) != new.get(field):
            raise ValueError(
                f"the existing seed table has {field} {old.get(field)!r}, this run {new.get(field)!r}: "
                "merging would drop its chapters; write this run elsewhere (--out) or move the old table"
            )
    chapters = {**old.get("chapters", {}), **new.get("chapters", {})}
    merged = {**old, "chapters": dict(sorted(chapters.items()))}
    lost = set(old.get("chapters", {})) - set(merged["chapters"])
    assert not lost, lost  # by construction
    return merged


def seed_chapter(seeds: Mapping[str, Any] | None, chapter: str) -> dict[str, Any]:
    """One chapter's entry of a seed table (empty when the chapter or the table is missing)."""
    return dict(((seeds or {}).get("chapters") or {}).get(chapter) or {})


def _tally(verdict_list: Iterable[str]) -> str:
    """``["reproduced", "reproduced", "partly"]`` -> ``"2 R, 1 P"``."""
    short = {"reproduced": "R", "partly": "P", "not reproduced": "N", "inconclusive": "I"}
    counts: dict[str, int] = {}
    for v in verdict_list:
        counts[v] = counts.get(v, 0) + 1
    order = list(VERDICTS) + ["missing"]
    return ", ".join(
        f"{n} {short.get(v, v)}"
        for v, n in sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    )


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
        out.append(
            [
                link,
                rec["source"],
                f"{rec['profile']}, {rec['seed']}",
                sum(r["kind"] == "claim" for r in rows),
                sum(r["kind"] == "control" for r in rows),
                *(sum(r["verdict"] == v for r in ev) for v in VERDICTS),
                ident,
                sum(r["kind"] == "sanity" for r in rows),
            ]
        )
    return table(
        [
            "chapter",
            "paper",
            "profile, seed",
            "claims",
            "controls",
            *VERDICTS,
            "identities (worst gap)",
            "sanity checks",
        ],
        out,
    )


def claims_table(records: Sequence[Mapping[str, Any]], seeds: Mapping[str, Any] | None = None) -> str:
    """Every claim and control of every chapter, one Markdown row each, linked to its section,
    with its null beside ours; with a seed table, the verdicts over that chapter's seeds and the
    spread of our value."""
    header = ["ch.", "kind", "claim", "paper", "ours", "null", "criterion", "verdict"]
    if seeds:
        header += ["over seeds", "spread of ours"]
    out = []
    for rec in records:
        entry_ch = seed_chapter(seeds, rec["chapter"])
        for r in rec["rows"]:
            if r["kind"] not in EVIDENCE_KINDS:
                continue
            row = [
                f"{rec['chapter']} {_link(rec, r)}",
                r["kind"],
                r["claim"],
                r["paper"],
                _ours(r),
                _null_cell(r),
                r["criterion"],
                _verdict_cell(r),
            ]
            if seeds:
                entry = entry_ch.get("rows", {}).get(r["key"])
                if entry is None:
                    row += ["(not in the seed run)", ""]
                else:
                    per = [entry["verdicts"].get(str(s), "missing") for s in entry_ch["seeds"]]
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
    """Where a seed table comes from: per chapter, its seeds, date and commit."""
    parts = []
    for number, ch in sorted((seeds.get("chapters") or {}).items()):
        about = ", ".join(f"{k} {ch[k]}" for k in ("created", "commit") if ch.get(k))
        failed = f", {len(ch['failures'])} failed runs" if ch.get("failures") else ""
        parts.append(f"chapter {number}: seeds {', '.join(str(s) for s in ch.get('seeds', []))} ({about}{failed})")
    machines = sorted({ch.get("machine") for ch in (seeds.get("chapters") or {}).values() if ch.get("machine")})
    torch_v = sorted({ch.get("torch") for ch in (seeds.get("chapters") or {}).values() if ch.get("torch")})
    return (
        f"Seed table, profile `{seeds['profile']}`: "
        + "; ".join(parts)
        + (f". Machine {', '.join(machines)}" if machines else "")
        + (f", torch {', '.join(torch_v)}" if torch_v else "")
        + "."
    )


def runtime_line(chapter: str, path: str | Path = Path("records") / "seeds-book.json") -> str:
    """One line for a chapter's opening: how long the whole chapter took in the committed seed
    run (the median over its seeds, robust to a run slowed by other work on the machine). The seed table
    lives beside the book, so outside a checkout (Colab) the line says where to look instead."""
    path = Path(path)
    if not path.exists():
        return "Run time: see benchmarks/README.md of the book's repository."
    seeds = json.loads(path.read_text())
    ch = seed_chapter(seeds, chapter)
    secs = sorted((ch.get("seconds") or {}).values())
    if not secs:
        return f"Run time: chapter {chapter} is not in the seed run ({path}); see benchmarks/README.md."
    mid = secs[len(secs) // 2] if len(secs) % 2 else (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2
    return (
        f"Run time: about {mid:.0f} s at the {seeds['profile']} profile on {ch.get('machine', 'this machine')} "
        f"(median of {len(secs)} seeds in the seed run of {str(ch.get('created'))[:10]}); "
        "the paper profile on a GPU: benchmarks/README.md."
    )


# ---------------------------------------------------------------------------------------------
# Command line: refresh the committed record of expected verdicts
# ---------------------------------------------------------------------------------------------


def expected_record(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The committed record of expected verdicts made from a build's records."""
    seeds = sorted({r["seed"] for r in records})
    profiles = sorted({r["profile"] for r in records})
    return {
        "schema": SCHEMA + "/verdicts",
        "profile": profiles[0] if len(profiles) == 1 else profiles,
        "seed": seeds[0] if len(seeds) == 1 else seeds,
        "chapters": verdicts(records),
        # each row's criterion as the page states it: the changelog (.ci/changelog.py) lists the
        # criteria whose text changed beside the verdicts that did
        "criteria": {rec["chapter"]: {r["key"]: r["criterion"] for r in rec["rows"]} for rec in records},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iclbook.records verdicts --records DIR --out FILE [--profile book]``: write the
    expected verdicts of a build (``make verdicts``); ``diff`` prints what changed instead."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m iclbook.records", description=main.__doc__)
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
