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
    row = led.claim("c", paper="p", ours="o", value=0.1, criterion=ledger.at_least(0.9), no_null="t")
    assert row.verdict == "not reproduced" and led.all_passed
    led.control(
        "k", paper="p", ours="o", value=0.1, criterion=ledger.at_least(0.9), inconclusive="at ceiling", no_null="t"
    )
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


def test_a_claim_or_control_gives_its_null_or_says_why_not():
    led = ledger.Ledger("09", "test")
    for kind in (led.claim, led.control):
        with pytest.raises(ValueError, match="give its null"):
            kind("c", paper="p", ours="o", value=1.0, criterion=ledger.at_least(0.5))
        with pytest.raises(ValueError, match="give its null"):
            kind(
                "c",
                paper="p",
                ours="o",
                value=1.0,
                criterion=ledger.at_least(0.5),
                null=ledger.null("u", 0.1),
                no_null="x",
            )
    with pytest.raises(TypeError, match="null= takes"):
        led.claim("c", paper="p", ours="o", value=1.0, criterion=ledger.at_least(0.5), null=ledger.ceiling("best", 1.0))
    with pytest.raises(ValueError, match="says what it is"):
        ledger.null("", 0.3)
    with pytest.raises(ValueError, match="needs its value"):
        ledger.null("untrained")


def test_the_guard_refuses_a_row_its_null_passes():
    """A criterion that the null (a model without the mechanism) also meets cannot fail: the
    row raises like a broken sanity check, whatever our own number is."""
    led = ledger.Ledger("09", "test")
    with pytest.raises(AssertionError, match="cannot fail"):
        led.claim(
            "along mu-bar",
            paper="p",
            ours="o",
            value=0.95,
            criterion=ledger.at_least(0.7, what="median cos"),
            null=ledger.null("random non-negative mix", 0.84),
        )
    with pytest.raises(AssertionError, match="cannot fail"):  # a compound rule, applied to the null by the chapter
        led.control(
            "k",
            paper="p",
            ours="o",
            criterion=ledger.holds("ordered", True),
            null=ledger.null("no pruning", passes=True),
        )
    with pytest.raises(ValueError, match="passes="):  # a holds() rule cannot be applied to a bare number
        led.control(
            "k", paper="p", ours="o", criterion=ledger.holds("ordered", True), null=ledger.null("no pruning", 0.2)
        )
    # a null that reaches only the partly band is allowed, and shown
    row = led.claim(
        "c",
        paper="p",
        ours="o",
        value=0.95,
        criterion=ledger.at_least(0.9, partly=0.5),
        null=ledger.null("random", 0.6),
    )
    assert row.verdict == "reproduced" and row.null_verdict == "partly" and row.null == 0.6
    assert not any(r.key == "along mu-bar" for r in led.rows)


def test_the_guard_refuses_a_row_its_ceiling_fails():
    led = ledger.Ledger("09", "test")
    with pytest.raises(AssertionError, match="cannot pass"):
        led.claim(
            "keeps half the gain",
            paper="p",
            ours="o",
            value=0.2,
            criterion=ledger.at_least(0.5),
            null=ledger.null("no context", 0.0),
            ceiling=ledger.ceiling("optimal reader of the non-cue words", 0.31),
        )
    row = led.claim(
        "keeps a share of the room",
        paper="p",
        ours="o",
        value=ledger.share(0.2, 0.0, 0.31),
        criterion=ledger.at_least(0.5),
        null=ledger.null("no context", 0.0),
        ceiling=ledger.ceiling("optimal reader", 1.0),
    )
    assert row.verdict == "reproduced" and row.ceiling == 1.0 and "ceiling 1 (optimal reader)" in led.markdown()
    assert math.isnan(ledger.share(0.3, 0.5, 0.5))


def test_rivals_the_interval_keeps_make_a_row_inconclusive():
    led = ledger.Ledger("09", "test")
    kw = dict(paper="alpha^-2/3", ours="o", criterion=ledger.between(-0.9, -0.5), no_null="an exponent")
    row = led.claim("slope", value=-0.8, interval=(-1.1, -0.6), rivals={"alpha^-1": -1.0}, **kw)
    assert row.verdict == "inconclusive" and "does not exclude alpha^-1 (-1)" in row.reason
    assert row.rivals == [{"name": "alpha^-1", "value": -1.0, "excluded": False}]
    row = led.claim("slope2", value=-0.7, interval=(-0.8, -0.6), rivals={"alpha^-1": -1.0}, **kw)
    assert row.verdict == "reproduced" and row.rivals[0]["excluded"]
    assert "excludes alpha^-1 (-1)" in led.markdown()
    row = led.claim("slope3", value=-1.0, interval=(-1.1, -0.95), rivals={"alpha^-1": -1.0}, **kw)
    assert row.verdict == "not reproduced"  # the rival only ever withholds a pass
    with pytest.raises(ValueError, match="interval"):
        led.claim("slope4", value=-0.7, rivals={"alpha^-1": -1.0}, **kw)


def test_a_claim_needs_a_criterion_object():
    with pytest.raises(TypeError):
        ledger.Ledger("01", "t").claim("c", paper="p", ours="o", criterion="≥ 0.9", no_null="t")


def test_bad_chapter_and_kind_are_refused():
    with pytest.raises(ValueError):
        ledger.Ledger("4", "t")
    with pytest.raises(ValueError):
        ledger.Row("belief", "c", "p", "o", "x", "reproduced")


def test_rerunning_a_cell_replaces_its_row():
    led = ledger.Ledger("01", "t")
    for v in (0.1, 0.95):
        led.claim("same", paper="p", ours=str(v), value=v, criterion=ledger.at_least(0.9), no_null="t")
    assert len(led.rows) == 1 and led.rows[0].verdict == "reproduced"


def test_markdown_separates_evidence_from_identities_and_escapes_bars():
    led = ledger.Ledger("01", "t")
    led.claim("a | b", paper="p", ours="o", value=1, criterion=ledger.at_least(0.5), null=ledger.null("untrained", 0.1))
    led.identity("id", gap=0.0, tol=1e-12)
    text = led.markdown()
    row = next(line for line in text.split("\n") if line.startswith("| 1 | claim"))
    cells = re.split(r"(?<!\\)\|", row)[1:-1]  # split on unescaped bars only, as Markdown does
    assert len(cells) == 8 and cells[2].strip() == "a \\| b"
    assert cells[5].strip() == "0.1 (untrained; not reproduced)"
    evidence, checks = text.split("Identities")
    assert "**reproduced**" in evidence and "| identity |" in checks and "| identity |" not in evidence


def test_record_round_trip_and_comparison(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    monkeypatch.setenv("ICLBOOK_SEED", "0")
    led = ledger.Ledger("07", "Paper", page="book/07_x")
    led.claim(
        "c1",
        paper="p",
        ours="o",
        value=0.95,
        interval=(0.9, 1.0),
        criterion=ledger.at_least(0.9),
        section="sec-x",
        null=ledger.null("shuffled labels", 0.5, interval=(0.4, 0.6)),
    )
    led.claim("c2", paper="p", ours="o", value=math.nan, criterion=ledger.at_least(0.9), no_null="no model lacks it")
    led.identity("i1", gap=1e-16, tol=1e-10)
    path = led.save(tmp_path)
    assert path.name == "ch07-book.json"
    rec = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert rec["schema"] == ledger.SCHEMA and rec["rows"][1]["value"] is None
    assert rec["rows"][0]["interval"] == [0.9, 1.0] and rec["rows"][0]["section"] == "sec-x"
    assert rec["rows"][0]["null"] == 0.5 and rec["rows"][0]["null_interval"] == [0.4, 0.6]
    assert rec["rows"][0]["null_verdict"] == "not reproduced" and rec["rows"][1]["no_null"] == "no model lacks it"
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
    table = records.seed_table(
        per_seed, profile="book", about={"commit": "abc", "seconds": {"01": {"0": 5.0}}, "failures": []}
    )
    ch = table["chapters"]["01"]
    assert ch["seeds"] == [0, 1, 2] and ch["commit"] == "abc" and ch["seconds"] == {"0": 5.0}
    entry = ch["rows"]["a"]
    assert entry["verdicts"] == {"0": "partly", "1": "reproduced", "2": "reproduced"}
    assert entry["spread"] == pytest.approx([0.1, 0.3])
    assert "i" not in ch["rows"]  # identities are not in the seed table
    claims = records.claims_table(per_seed[0], table)
    assert "2 R, 1 P" in claims and "0.1 to 0.3" in claims and "{doc}`§ </book/01_x>`" in claims
    counts = records.verdict_counts(per_seed[0], {"01": "Chapter one"})
    assert "Chapter one" in counts and "| 1 (1e-15) |" in counts
    assert "1.0e-15" in records.identity_table(per_seed[0])
    assert "chapter 01: seeds 0, 1, 2 (commit abc)" in records.seed_run_summary(table)


def test_cli_writes_and_diffs_expected_verdicts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    led = ledger.Ledger("05", "t")
    led.claim("c", paper="p", ours="o", value=1, criterion=ledger.at_least(0.5), no_null="t")
    led.save(tmp_path)
    out = tmp_path / "expected.json"
    assert records.main(["verdicts", "--records", str(tmp_path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["chapters"] == {"05": {"c": "reproduced"}}
    assert records.main(["diff", "--records", str(tmp_path), "--out", str(out)]) == 0
    assert "no verdict changed" in capsys.readouterr().out


def _seeds(chapters, **about):
    per_seed = {s: [_record(ch, s, [_row("a", "reproduced", 0.5)]) for ch in chapters] for s in range(2)}
    return records.seed_table(per_seed, profile="book", about=about)


def test_a_seed_run_of_some_chapters_keeps_every_other_chapter():
    """Issue 29: a rerun of chapters 3 and 5 used to overwrite the table and lose chapters 1, 2
    and 4. Each chapter now keeps its own entry (seeds, date, commit), and a merge keeps them."""
    old = _seeds(["01", "02", "03", "04", "05"], commit="c0", created="t0")
    new = _seeds(["03", "05"], commit="c1", created="t1")
    merged = records.merge_seed_tables(old, new)
    assert sorted(merged["chapters"]) == ["01", "02", "03", "04", "05"]
    assert merged["chapters"]["03"]["commit"] == "c1" and merged["chapters"]["01"]["commit"] == "c0"
    summary = records.seed_run_summary(merged)
    assert (
        "chapter 01: seeds 0, 1 (created t0, commit c0)" in summary and "chapter 03: seeds 0, 1 (created t1" in summary
    )
    assert records.merge_seed_tables(None, new) == new
    with pytest.raises(ValueError, match="would drop its chapters"):
        records.merge_seed_tables(dict(old, profile="smoke"), new)
    with pytest.raises(ValueError, match="would drop its chapters"):
        records.merge_seed_tables(dict(old, schema="iclbook.ledger/1/seeds"), new)


def test_the_committed_seed_table_holds_every_chapter_over_five_seeds():
    """The claims page and the chapters' prose cite the seed table: every chapter must be in it,
    over the seeds 0-4, computed with the current ledger schema."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    path = root / "book" / "records" / "seeds-book.json"
    table = json.loads(path.read_text())
    assert table["schema"] == ledger.SCHEMA + "/seeds"
    chapters = sorted(p.name[:2] for p in (root / "book").glob("[0-9][0-9]_*.md"))
    assert sorted(table["chapters"]) == chapters
    for number, ch in table["chapters"].items():
        assert ch["seeds"] == [0, 1, 2, 3, 4], number
        assert sorted(ch["seconds"]) == ["0", "1", "2", "3", "4"], number
        assert not ch.get("failures"), (number, ch.get("failures"))
        passing = {k: e["null_verdicts"] for k, e in ch["rows"].items() if "reproduced" in e["null_verdicts"].values()}
        assert not passing, f"chapter {number}: rows whose null passes their criterion at some seed: {passing}"


def test_runtime_line_reads_the_seed_run(tmp_path):
    path = tmp_path / "seeds-book.json"
    assert "benchmarks/README.md" in records.runtime_line("02", path)  # no seed table here
    table = _seeds(["02"], machine="x86_64, 2 CPUs", created="2026-12-03T12:09")
    table["chapters"]["02"]["seconds"] = {"0": 170.2, "1": 176.1, "2": 149.1, "3": 142.1}
    path.write_text(json.dumps(table))
    line = records.runtime_line("02", path)
    assert "about 160 s at the book profile" in line and "median of 4 seeds" in line and "2026-12-03" in line
    assert "not in the seed run" in records.runtime_line("04", path)


def _benchmark(name):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chapter_times_runs_the_seed_and_cache_the_environment_names(monkeypatch):
    """Issue 29: `ICLBOOK_SEED=3 python benchmarks/chapter_times.py` silently ran seed 0."""
    chapter_times = _benchmark("chapter_times")
    monkeypatch.setenv("ICLBOOK_SEED", "3")
    monkeypatch.setenv("ICLBOOK_CACHE", "/tmp/some-cache")
    args = chapter_times.parse_args([])
    assert (args.seed, args.cache) == (3, "/tmp/some-cache")
    assert chapter_times.parse_args(["--seed", "1"]).seed == 1  # a flag still wins
    monkeypatch.delenv("ICLBOOK_SEED")
    monkeypatch.delenv("ICLBOOK_CACHE")
    args = chapter_times.parse_args([])
    assert (args.seed, args.cache) == (0, None)
