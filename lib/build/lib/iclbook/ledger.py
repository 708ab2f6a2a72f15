"""The claims ledger: each check cell of a chapter records one row and asserts it.

    LEDGER = Ledger("Dherin et al. 2025")
    LEDGER.check("Thm 2.2: context == rank-1 patch", paper="exact identity",
                 ours=f"max gap {gap:.1e}", ok=gap < 1e-10)

``check`` raises ``AssertionError`` when ``ok`` is false, so a claim that stops holding fails the
notebook (and CI). Where a paper's claim does *not* reproduce, the chapter asserts what it found
instead and says so in the verdict: ``verdict="not reproduced"``. The table at the end of a
chapter is :meth:`Ledger.markdown`, built only from these recorded, computed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ledger:
    """Rows of (claim, paper's statement or number, our computed value, verdict)."""

    source: str
    rows: list[dict[str, str]] = field(default_factory=list)

    def check(self, claim: str, *, paper: str, ours: str, ok: bool, verdict: str = "pass") -> None:
        """Record a row and assert ``ok``. Re-running a cell replaces its earlier row."""
        ok = bool(ok)
        self.rows = [r for r in self.rows if r["claim"] != claim]
        self.rows.append({"claim": claim, "paper": paper, "ours": ours,
                          "verdict": verdict if ok else "FAIL"})
        if not ok:
            raise AssertionError(f"claim failed: {claim} (ours: {ours}; paper: {paper})")

    @property
    def all_passed(self) -> bool:
        return bool(self.rows) and all(r["verdict"] != "FAIL" for r in self.rows)

    def markdown(self) -> str:
        """The ledger as a Markdown table (renders in the HTML book, Jupyter and Colab)."""
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = ["| # | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
        for i, r in enumerate(self.rows, 1):
            lines.append(f"| {i} | {cell(r['claim'])} | {cell(r['paper'])} | {cell(r['ours'])} "
                         f"| {cell(r['verdict'])} |")
        return "\n".join(lines)
