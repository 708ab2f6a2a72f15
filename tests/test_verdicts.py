"""A fresh build's verdicts against the committed record of expected verdicts.

`make test` builds the book at the book profile and seed 0, which writes one ledger record per
chapter into ``ICLBOOK_RECORDS``; this test compares their verdicts, row by row, with
``tests/verdicts-book.json``. A number that moved within its criterion is not a difference; a
verdict that changed, a row that appeared or disappeared is, and the test prints each one.

If the change is intended:  make verdicts   (rewrites the file and prints the changes), then
commit it with the reason for each changed verdict in the commit message.
"""

import json
import os
from pathlib import Path

import pytest

from iclbook import ledger, records

EXPECTED = Path(__file__).with_name("verdicts-book.json")


def _book_records():
    recs = records.load_records(ledger.records_dir(), profile="book")
    if not recs:
        if os.environ.get("ICLBOOK_REQUIRE_RECORDS") == "1":
            pytest.fail(f"no book-profile ledger records in {ledger.records_dir()}: the book build did not write them")
        pytest.skip("no book-profile ledger records: run the book build first (make test does)")
    return recs


def test_fresh_verdicts_match_the_committed_record():
    recs = _book_records()
    seeds = {r["seed"] for r in recs}
    if seeds != {0}:
        pytest.skip(f"the records are of seed(s) {sorted(seeds)}; the expected verdicts are of seed 0")
    expected = json.loads(EXPECTED.read_text())
    assert expected["profile"] == "book" and expected["seed"] == 0
    diff = records.compare_verdicts(expected["chapters"], records.verdicts(recs))
    assert not diff, (
        "verdicts differ from tests/verdicts-book.json:\n  "
        + "\n  ".join(diff)
        + "\nIf intended: `make verdicts` and give the reason in the commit message."
    )


def test_the_smoke_profile_drops_no_row():
    """The one smoke convention: a row the smoke profile cannot judge is recorded as inconclusive
    with its reason, never dropped. Every row of a chapter's book-profile record must be in its
    smoke record of the same build (``make test`` writes both: the book build, then the Colab
    imitation at smoke)."""
    book = {r["chapter"]: r for r in records.load_records(ledger.records_dir(), profile="book")}
    smoke = {r["chapter"]: r for r in records.load_records(ledger.records_dir(), profile="smoke")}
    both = sorted(set(book) & set(smoke))
    if not both:
        if os.environ.get("ICLBOOK_REQUIRE_RECORDS") == "1":
            pytest.fail(f"no chapter has both a book and a smoke record in {ledger.records_dir()}")
        pytest.skip("no chapter has both a book and a smoke record: run make test")
    dropped = {ch: sorted({r["key"] for r in book[ch]["rows"]} - {r["key"] for r in smoke[ch]["rows"]}) for ch in both}
    dropped = {ch: keys for ch, keys in dropped.items() if keys}
    assert not dropped, f"rows recorded at book but dropped at smoke: {dropped}"


def test_every_book_row_is_read_against_a_null_that_does_not_pass():
    """Issue 29: every claim and control row of the book build carries its null (or says why it
    has none), and no null passes its row's criterion, inconclusive rows included: a criterion
    that a model without the mechanism meets cannot fail, and its row would carry no information."""
    bad, passing = [], []
    for rec in _book_records():
        for r in rec["rows"]:
            if r["kind"] not in ledger.EVIDENCE_KINDS:
                continue
            if not (r.get("null_what") or r.get("no_null")):
                bad.append(f"chapter {rec['chapter']}: {r['key']!r}")
            if r.get("null_verdict") == "reproduced":
                passing.append(f"chapter {rec['chapter']}: {r['key']!r} (null {r.get('null')}, {r.get('null_what')})")
    assert not bad, "rows without a null or a reason for none:\n  " + "\n  ".join(bad)
    assert not passing, "rows whose null passes their criterion:\n  " + "\n  ".join(passing)
