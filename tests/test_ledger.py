"""The claims ledger: criteria give verdicts from numbers, identities and sanity checks fail the
build, claims never do, records round-trip, and differences in verdicts are reported."""

import json
import math
import re

import pytest

from iclbook import ledger, records


def test_at_least_at_most_between_give_verdicts_from_numbers():
    c = ledger.at_least(0.9, partly=0.7)
    assert [c.verdict(v) for v in (0.95, 0.9, 0.8, 0.5)] == ["reproduced", "reproduced", "partly", "not reproduced"]
    c = ledger.at_most(0.01, partly=0.05)
    assert [c.verdict(v) for v in (0.0, 0.03, 0.2)] == ["reproduced", "partly", "not reproduced"]
    c = ledger.between(-0.9, -0.4, partly=(-1.5, -0.3))
    assert [c.verdict(v) for v in (-0.67, -1.2, -0.35, -2.0, 0.1)] == [
        "reproduced",
        "partly",
        "partly",
        "not reproduced",
        "not reproduced",
    ]
    assert ledger.at_least(1).verdict(0.5) == "not reproduced"  # no partly band


@pytest.mark.parametrize("value", [None, math.nan, math.inf])
def test_a_missing_number_is_inconclusive(value):
    assert ledger.at_least(0.5).verdict(value) == "inconclusive"


def test_holds_uses_the_computed_booleans():
    assert ledger.holds("x", True).verdict(None) == "reproduced"
    assert ledger.holds("x", False, partly=True).verdict(None) == "partly"
    assert ledger.holds("x", False).verdict(None) == "not reproduced"


@pytest.mark.parametrize(
    "make",
    [
        lambda: ledger.at_least(0.5, partly=0.9),
        lambda: ledger.at_most(0.5, partly=0.1),
        lambda: ledger.between(1, 0),
        lambda: ledger.between(0, 1, partly=(0.2, 2)),
    ],
)
def test_inconsistent_criteria_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_criterion_text_states_the_threshold():
    assert ledger.at_least(0.9, partly=0.7, what="IC").text == "IC ≥ 0.9 (partly ≥ 0.7)"


def test_claims_never_fail_identities_and_sanity_do():
    led = ledger.Ledger("09", "test")
    row = led.claim("c", paper="p", ours="o", value=0.1, criterion=ledger.at_least(0.9))
    assert row.verdict == "not reproduced" and led.all_passed
    led.control("k", paper="p", ours="o", value=0.1, criterion=ledger.at_least(0.9), inconclusive="at ceiling")
    assert led.rows[-1].verdict == "inconclusive" and led.rows[-1].reason == "at ceiling"
    led.identity("i", gap=1e-15, tol=1e-10)
    assert led.all_passed
    with pytest.raises(AssertionError, match="identity failed"):
        led.identity("j", gap=1e-3, tol=1e-10)
    with pytest.raises(AssertionError, match="identity failed"):
        led.identity("nan", gap=math.nan, tol=1e-10)
    with pytest.raises(AssertionError, match="sanity"):
        led.sanity("s", ok=False, ours="o", criterion="c")
    assert not led.all_passed
    assert led.counts() == {"reproduced": 0, "partly": 0, "not reproduced": 1, "inconclusive": 1}


def test_a_claim_needs_a_criterion_object():
    with pytest.raises(TypeError):
        ledger.Ledger("01", "t").claim("c", paper="p", ours="o", criterion="≥ 0.9")


def test_bad_chapter_and_kind_are_refused():
    with pytest.raises(ValueError):
        ledger.Ledger("4", "t")
    with pytest.raises(ValueError):
        ledger.Row("belief", "c", "p", "o", "x", "reproduced")


def test_rerunning_a_cell_replaces_its_row():
    led = ledger.Ledger("01", "t")
    for v in (0.1, 0.95):
        led.claim("same", paper="p", ours=str(v), value=v, criterion=ledger.at_least(0.9))
    assert len(led.rows) == 1 and led.rows[0].verdict == "reproduced"


def test_markdown_separates_evidence_from_identities_and_escapes_bars():
    led = ledger.Ledger("01", "t")
    led.claim("a | b", paper="p", ours="o", value=1, criterion=ledger.at_least(0.5))
    led.identity("id", gap=0.0, tol=1e-12)
    text = led.markdown()
    row = next(line for line in text.split("\n") if line.startswith("| 1 | claim"))
    cells = re.split(r"(?<!\\)\|", row)[1:-1]  # split on unescaped bars only, as Markdown does
    assert len(cells) == 7 and cells[2].strip() == "a \\| b"
    evidence, checks = text.split("Identities")
    assert "**reproduced**" in evidence and "| identity |" in checks and "| identity |" not in evidence


def test_record_round_trip_and_comparison(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    monkeypatch.setenv("ICLBOOK_SEED", "0")
    led = ledger.Ledger("07", "Paper", page="book/07_x")
    led.claim(
        "c1", paper="p", ours="o", value=0.95, interval=(0.9, 1.0), criterion=ledger.at_least(0.9), section="sec-x"
    )
    led.claim("c2", paper="p", ours="o", value=math.nan, criterion=ledger.at_least(0.9))
    led.identity("i1", gap=1e-16, tol=1e-10)
    path = led.save(tmp_path)
    assert path.name == "ch07-book.json"
    rec = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert rec["schema"] == ledger.SCHEMA and rec["rows"][1]["value"] is None
    assert rec["rows"][0]["interval"] == [0.9, 1.0] and rec["rows"][0]["section"] == "sec-x"
    recs = records.load_records(tmp_path, profile="book")
    assert records.load_records(tmp_path, profile="smoke") == []
    got = records.verdicts(recs)
    assert got == {"07": {"c1": "reproduced", "c2": "inconclusive", "i1": "holds"}}
    assert records.compare_verdicts(got, got) == []
    expected = {"07": {"c1": "partly", "c3": "reproduced", "i1": "holds"}, "08": {"x": "reproduced"}}
    diff = records.compare_verdicts(expected, got)
    assert "chapter 07: 'c1': partly -> reproduced" in diff
    assert any("row removed: 'c3'" in d for d in diff) and any("new row: 'c2'" in d for d in diff)
    assert any(d.startswith("chapter 08: no record") for d in diff)
    assert records.missing_chapters(recs, ["07", "08"]) == ["08"]


def test_a_foreign_json_is_not_a_record(tmp_path):
    (tmp_path / "ch01-book.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a ledger record"):
        records.load_records(tmp_path)


def _record(chapter, seed, rows):
    return {
        "chapter": chapter,
        "seed": seed,
        "profile": "book",
        "source": "S",
        "page": f"book/{chapter}_x",
        "rows": rows,
    }


def _row(key, verdict, value, kind="claim"):
    return {
        "key": key,
        "claim": key,
        "kind": kind,
        "verdict": verdict,
        "value": value,
        "paper": "p",
        "ours": "o",
        "criterion": "c",
        "reason": "",
        "section": None,
        "interval": None,
    }


def test_seed_table_and_dashboard_tables():
    per_seed = {
        s: [
            _record(
                "01",
                s,
                [_row("a", "reproduced" if s else "partly", 0.1 * (s + 1)), _row("i", "holds", 1e-15, kind="identity")],
            )
        ]
        for s in range(3)
    }
    table = records.seed_table(per_seed, profile="book", about={"commit": "abc"})
    entry = table["chapters"]["01"]["a"]
    assert entry["verdicts"] == {"0": "partly", "1": "reproduced", "2": "reproduced"}
    assert entry["spread"] == pytest.approx([0.1, 0.3])
    assert "i" not in table["chapters"]["01"]  # identities are not in the seed table
    claims = records.claims_table(per_seed[0], table)
    assert "2 R, 1 P" in claims and "0.1 to 0.3" in claims and "{doc}`§ </book/01_x>`" in claims
    counts = records.verdict_counts(per_seed[0], {"01": "Chapter one"})
    assert "Chapter one" in counts and "| 1 (1e-15) |" in counts
    assert "1.0e-15" in records.identity_table(per_seed[0])
    assert "commit abc" in records.seed_run_summary(table)


def test_cli_writes_and_diffs_expected_verdicts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    led = ledger.Ledger("05", "t")
    led.claim("c", paper="p", ours="o", value=1, criterion=ledger.at_least(0.5))
    led.save(tmp_path)
    out = tmp_path / "expected.json"
    assert records.main(["verdicts", "--records", str(tmp_path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["chapters"] == {"05": {"c": "reproduced"}}
    assert records.main(["diff", "--records", str(tmp_path), "--out", str(out)]) == 0
    assert "no verdict changed" in capsys.readouterr().out


def test_seed_run_summary_names_kept_chapters():
    seeds = {
        "profile": "book",
        "seeds": [0, 1],
        "created": "2026-12-03T10:00+00:00",
        "commit": "abc",
        "kept": {"01": {"created": "2026-12-02T10:00+00:00", "commit": "old"}},
    }
    text = records.seed_run_summary(seeds)
    assert "chapter 01 from an earlier run (2026-12-02T10:00+00:00, commit old)" in text and "commit abc" in text
    seeds["dropped"] = {"03": "changed after this run"}
    assert records.seed_run_summary(seeds).endswith("Chapter 03 is not in it: changed after this run.")


def test_keep_other_chapters_merges_a_partial_seed_run():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    old = {
        "profile": "book",
        "seeds": [0, 1],
        "created": "t0",
        "commit": "c0",
        "seconds": {"01": {"0": 1.0}},
        "chapters": {"01": {"a": {}}, "03": {"old": {}}},
    }
    new = {
        "profile": "book",
        "seeds": [0, 1],
        "created": "t1",
        "commit": "c1",
        "seconds": {"03": {"0": 2.0}},
        "chapters": {"03": {"new": {}}},
    }
    merged = seeds.keep_other_chapters(new, old)
    assert merged["chapters"] == {"03": {"new": {}}, "01": {"a": {}}}
    assert merged["kept"] == {"01": {"created": "t0", "commit": "c0"}}
    assert merged["seconds"] == {"01": {"0": 1.0}, "03": {"0": 2.0}}
    other = dict(old, seeds=[0, 1, 2])
    assert seeds.keep_other_chapters(dict(new), other)["chapters"] == {"03": {"new": {}}}


def test_runtime_line_reads_the_seed_run(tmp_path):
    path = tmp_path / "seeds-book.json"
    assert "benchmarks/README.md" in records.runtime_line("02", path)  # no seed table here
    path.write_text(
        json.dumps(
            {
                "profile": "book",
                "machine": "x86_64, 2 CPUs",
                "created": "2026-12-03T12:09",
                "seconds": {"02": {"0": 170.2, "1": 176.1, "2": 149.1, "3": 142.1}},
                "kept": {"01": {"created": "2026-11-30T10:00"}},
            }
        )
    )
    line = records.runtime_line("02", path)
    assert "about 160 s at the book profile" in line and "median of 4 seeds" in line and "2026-12-03" in line
    assert "not in the seed run" in records.runtime_line("04", path)
