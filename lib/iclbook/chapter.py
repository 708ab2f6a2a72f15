"""How every chapter starts and ends: one call each.

The first code cell of a chapter is::

    ch = chapter.start("03", "Reddy 2024", ih.CONFIGS, page="book/03_induction_cliff", streams=ih.STREAMS)
    PROFILE, SEED, cfg, LEDGER, SEEDS = ch.profile, ch.seed, ch.cfg, ch.ledger, ch.members

which reads the profile and the seed from the environment (``ICLBOOK_PROFILE``,
``ICLBOOK_SEED``), seeds Python, NumPy and torch, sets the book's figure style, picks the
profile's config, opens the chapter's claims ledger and prints the parameters line. Its random
draws go through named streams (``ch.rng("ood-domain")``, ``ch.seeds("members", 3)``) whose
table lives in the chapter's library module. The last cell is ``ch.finish()``: the chapter's
time, then the ledger's table, record and summary line.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from iclbook import ledger as _ledger
from iclbook import plots, records, runtime

#: The layout rule, one row per chapter: ``book/NN_<slug>.md`` is the page, ``iclbook.<module>``
#: its code, ``tests/test_<tests>.py`` that code's tests, and the page imports the module as
#: ``alias``. A chapter whose code is a package keeps it in rooms, one idea each: the standard
#: rooms of :data:`ROOMS` (``rooms`` maps each to its module, where a chapter's own name fits its
#: work better) and its own (``own``). ``tests/test_notebooks.py`` checks every part, and that the
#: rooms listed are exactly the package's modules.
CHAPTERS = {
    "01": {
        "slug": "nonlinear_icl",
        "module": "patterns",
        "alias": "pt",
        "tests": "patterns",
        "package": "patterns",
        "rooms": {},
        "own": ("baselines", "complexity", "nulls"),
    },
    "02": {
        "slug": "implicit_finetuning",
        "module": "implicit.experiment",
        "alias": "ex",
        "tests": "implicit",
        "package": "implicit",
        "rooms": {"training": "pretrain", "measures": "experiment"},
        "own": (
            "dual_form",
            "codec",
            "probe",
            "metrics",
            "hf",
            "families",
            "real",
            "retrain",
            "world",
            "readers",
            "inference",
        ),
    },
    "03": {
        "slug": "induction_cliff",
        "module": "induction",
        "alias": "ih",
        "tests": "induction",
        "package": "induction",
        "rooms": {},
        "own": ("pheno", "analysis", "clamping", "kinetics"),
    },
    "04": {
        "slug": "contextual_blocks",
        "module": "contextual",
        "alias": "cx",
        "tests": "contextual",
        "package": "contextual",
        "rooms": {},
        "own": ("layers", "patches", "modern"),
    },
    # chapter 5 reads chapter 3's network through the other chapters' code: one module is enough
    "05": {
        "slug": "four_lenses",
        "module": "lenses",
        "alias": "lenses",
        "tests": "lenses",
        "package": None,
        "rooms": {},
        "own": (),
    },
}

#: The rooms every chapter package has, by the question a newcomer asks: where are its sizes
#: (``config``: one config per profile, trained fields apart from checked ones), its data, its
#: model, what it measures on a trained model, and how it trains?
ROOMS = ("config", "data", "model", "measures", "training")


def rooms(number: str) -> dict[str, str]:
    """Chapter ``number``'s rooms: ``{room: "iclbook.<package>.<module>"}``, the standard ones of
    :data:`ROOMS` first, then its own (empty for a chapter that is one module)."""
    row = CHAPTERS[number]
    if row["package"] is None:
        return {}
    names = {room: row["rooms"].get(room, room) for room in ROOMS}
    names.update({own: own for own in row["own"]})
    return {room: f"iclbook.{row['package']}.{module}" for room, module in names.items()}


#: "Exact" in float64: the tolerance of every identity the chapters check. Their rounding stays
#: near 1e-15, so a real break shows orders of magnitude above it.
EXACT = 1e-10

#: Model seeds of a chapter: draw ``i`` of the stream "members" for its ``i``-th ensemble member.
#: Every chapter's table starts from these; a family of other models (an "sgd-members"...) adds a row.
MEMBERS = {"members": runtime.Stream(width=100)}


@dataclass
class Chapter:
    """What a chapter's cells share: its profile, seed, config, ledger and random streams."""

    number: str
    profile: str
    seed: int
    cfg: Any
    ledger: _ledger.Ledger
    device: torch.device
    streams: runtime.Streams
    started: float = field(default_factory=time.perf_counter)

    @property
    def members(self) -> list[int]:
        """The seeds of the chapter's main ensemble, one per member (``cfg.seeds`` of them)."""
        return self.seeds("members", int(getattr(self.cfg, "seeds", 1)))

    def seeds(self, name: str, n: int) -> list[int]:
        """The first ``n`` seeds of the stream family ``name``."""
        return self.streams.seeds(name, n)

    def rng(self, name: str, k: int = 0) -> torch.Generator:
        """A fresh ``torch.Generator`` of the stream ``name`` (its ``k``-th, for a family)."""
        return self.streams.generator(name, k)

    def np_rng(self, name: str, k: int = 0) -> np.random.Generator:
        """A fresh NumPy ``Generator`` of the stream ``name``."""
        return self.streams.numpy(name, k)

    @property
    def judged(self) -> bool:
        """Whether this profile's config trains long enough for learning-dependent claims to be
        judged (its ``judged`` field, a check field; True where the config has none)."""
        return bool(getattr(self.cfg, "judged", True))

    def unjudged(self, why: str, judged: bool | None = None) -> str | None:
        """The one smoke convention: a row that this profile cannot judge is still recorded, as
        inconclusive with a reason, never dropped. Pass the result as the row's ``inconclusive=``:
        ``None`` where the config is ``judged`` (or ``judged`` says so), else
        ``"<profile> profile: <why>"``."""
        ok = self.judged if judged is None else judged
        return None if ok else f"{self.profile} profile: {why}"

    def table(
        self, header: Sequence[Any], rows: Iterable[Sequence[Any]], *, align: Sequence[str] | None = None
    ) -> None:
        """Show a Markdown table in the chapter's output (:func:`iclbook.ledger.table`: pipes
        escaped, row shapes checked). Outside IPython it is printed. Nothing is returned, so a
        table as a cell's last line is shown once."""
        text = _ledger.table(header, rows, align=align)
        try:
            from IPython.display import Markdown, display  # noqa: PLC0415
        except ImportError:  # a plain Python run (benchmarks/gpu.py without Jupyter)
            print(text)
        else:
            display(Markdown(text))

    def elapsed(self) -> float:
        """Seconds since :func:`start`."""
        return time.perf_counter() - self.started

    def finish(self) -> None:
        """The chapter's last cell: its time, then the ledger (table, JSON record, summary line;
        raises if an identity or sanity check failed)."""
        print(f"chapter time: {self.elapsed():.0f} s")
        self.ledger.finish()


def start(
    number: str,
    source: str,
    configs: Mapping[str, Any],
    *,
    page: str,
    streams: Mapping[str, runtime.Stream] | None = None,
    device: torch.device | str | None = None,
    why_device: str = "",
    dtype: torch.dtype | None = None,
    threads: int | None = None,
    show_config: bool = True,
) -> Chapter:
    """Open a chapter: profile, seed, global seeding, figure style, config, ledger, streams.

    ``configs`` maps each profile to the chapter's config; ``streams`` is the chapter's table of
    named random streams (its model seeds, :data:`MEMBERS`, are always in it). ``device`` fixes
    the chapter's device (default :func:`runtime.device`), ``why_device`` says why in the
    parameters line; ``dtype`` sets torch's default dtype (float64 for exact identities);
    ``threads`` caps torch's CPU threads (never raising the count)."""
    prof, seed = runtime.profile(), runtime.seed()
    if prof not in configs:
        raise KeyError(f"chapter {number} has no config for profile {prof!r}; it has {sorted(configs)}")
    table = {**MEMBERS, **(streams or {})}
    dev = torch.device(device) if device is not None else runtime.device()
    if threads is not None:
        torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    if dtype is not None:
        torch.set_default_dtype(dtype)
    runtime.seed_everything(seed)
    plots.set_style()
    ch = Chapter(
        number=number,
        profile=prof,
        seed=seed,
        cfg=configs[prof],
        ledger=_ledger.Ledger(number, source, page=page, profile=prof, seed=seed),
        device=dev,
        streams=runtime.Streams(seed, table),
    )
    print(runtime.describe(prof, seed), f"| this chapter uses {dev}" + (f" ({why_device})" if why_device else ""))
    print(records.runtime_line(number))
    if show_config:
        print(ch.cfg)
    return ch
