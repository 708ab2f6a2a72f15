"""The layer between the library and the chapters: chapter.start/finish, named random streams,
the training history, the weight cache's source key and the Markdown table helper."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import iclbook
from iclbook import chapter, ledger, runtime, train

CHAPTER_STREAMS = {
    "01": "iclbook.patterns",
    "02": "iclbook.implicit.experiment",
    "03": "iclbook.induction",
    "04": "iclbook.contextual",
    "05": "iclbook.lenses",
}


# --- named random streams ----------------------------------------------------------------------


def test_a_stream_is_its_seed_and_repeats_its_draws():
    streams = runtime.Streams(3, {"data": runtime.Stream(), "family": runtime.Stream(width=5)})
    seed = streams.seed("data")
    assert seed == runtime.stream_seed("data", 3) and 0 <= seed < 2**63
    assert streams.seeds("family", 3) == [runtime.stream_seed("family", 3, k) for k in range(3)]
    a = torch.rand(4, generator=streams.generator("data"))
    assert torch.equal(a, torch.rand(4, generator=streams.generator("data")))  # fresh each time
    assert torch.equal(a, torch.rand(4, generator=runtime.generator(seed)))
    assert not torch.equal(a, torch.rand(4, generator=streams.generator("family")))
    # the seed of a name is fixed: a change to the derivation would move every number of the book
    assert runtime.stream_seed("members", 0, 0) == STREAM_SEED_MEMBERS_0


#: runtime.stream_seed("members", 0, 0), as the book's records were computed with it
STREAM_SEED_MEMBERS_0 = 7071087052971507844


def test_streams_refuse_unknown_names_indices_and_kinds():
    streams = runtime.Streams(0, {"data": runtime.Stream(width=2), "boot": runtime.Stream(kind="numpy")})
    with pytest.raises(KeyError, match="no random stream named 'dtaa'"):
        streams.generator("dtaa")
    with pytest.raises(ValueError, match="outside this stream's width 2"):
        streams.seed("data", 2)
    with pytest.raises(TypeError, match="numpy"):
        streams.generator("boot")
    assert streams.numpy("boot").integers(1000) == np.random.default_rng(streams.seed("boot")).integers(1000)
    with pytest.raises(ValueError):
        runtime.Stream(width=0)
    with pytest.raises(ValueError):
        runtime.Streams(-1, {})


def _every_table():
    tables = {"library": (runtime.LIBRARY_STREAMS, "library/")}
    for number, module in CHAPTER_STREAMS.items():
        tables[number] = ({**chapter.MEMBERS, **importlib.import_module(module).STREAMS}, "")
    return tables


def test_the_streams_of_different_seeds_and_names_share_no_draw():
    """Issue 29: seed s and seed s + 1 used to share draws (``SEED + k``), and a data stream met a
    model seed at one integer. Every (name, seed, index) of every table over seeds 0-9 now has a
    seed of its own, apart from one name used by two chapters (their draws are for two books'
    chapters that never meet, and chapter 5's members are chapter 3's on purpose)."""
    owner = {}
    for tag, (table, prefix) in _every_table().items():
        for name, stream in table.items():
            for base in range(10):
                for k in range(min(stream.width, 200)):
                    seed = runtime.stream_seed(prefix + name, base, k)
                    key = (prefix + name, base, k)
                    assert owner.setdefault(seed, key) == key, (tag, key, owner[seed])


@pytest.mark.parametrize("number", sorted(CHAPTER_STREAMS))
def test_every_stream_a_chapter_names_is_in_its_table(number):
    """A typo in ``ch.rng("...")`` would only fail when the cell runs; check every name now."""
    md = next((Path(__file__).parents[1] / "book").glob(f"{number}_*.md")).read_text()
    table = {**chapter.MEMBERS, **importlib.import_module(CHAPTER_STREAMS[number]).STREAMS}
    used = set(re.findall(r'ch\.(?:rng|np_rng|seeds|streams\.seed)\("([^"]+)"', md))
    assert used, f"chapter {number} draws through no named stream"
    assert used <= set(table), f"chapter {number} names streams its table lacks: {used - set(table)}"
    unused = set(table) - used - set(chapter.MEMBERS)
    assert not unused, f"chapter {number}'s table has streams no cell uses: {unused}"


# --- chapter.start / finish ----------------------------------------------------------------------


@dataclass
class _Cfg:
    seeds: int = 3
    size: int = 1


def test_start_reads_the_environment_and_seeds_everything(monkeypatch, capsys):
    monkeypatch.setenv("ICLBOOK_PROFILE", "smoke")
    monkeypatch.setenv("ICLBOOK_SEED", "2")
    before = torch.get_num_threads()
    ch = chapter.start(
        "07",
        "Nobody 2026",
        {"smoke": _Cfg(size=9), "book": _Cfg()},
        page="book/07_x",
        streams={"data": runtime.Stream()},
        device="cpu",
        why_device="tiny",
    )
    try:
        assert (ch.profile, ch.seed, ch.cfg.size) == ("smoke", 2, 9)
        assert ch.members == [runtime.stream_seed("members", 2, i) for i in range(3)]
        assert ch.streams.seed("data") == runtime.stream_seed("data", 2)
        assert ch.ledger.chapter == "07" and ch.device == torch.device("cpu")
        first = torch.rand(3)
        runtime.seed_everything(2)
        assert torch.equal(first, torch.rand(3))  # start seeded the global stream with the seed
        out = capsys.readouterr().out
        assert "seed=2" in out and "this chapter uses cpu (tiny)" in out and "_Cfg(seeds=3, size=9)" in out
    finally:
        torch.set_num_threads(before)


def test_start_refuses_a_profile_without_a_config(monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROFILE", "paper")
    with pytest.raises(KeyError, match="no config for profile 'paper'"):
        chapter.start("07", "Nobody 2026", {"book": _Cfg()}, page="book/07_x")


def test_finish_prints_the_time_and_fails_on_a_broken_identity(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    monkeypatch.setenv("ICLBOOK_RECORDS", str(tmp_path))
    ch = chapter.start("07", "Nobody 2026", {"book": _Cfg()}, page="book/07_x", show_config=False)
    ch.ledger.identity("a holds", gap=0.0, tol=chapter.EXACT)
    ch.finish()
    assert "chapter time:" in capsys.readouterr().out and (tmp_path / "ch07-book.json").exists()
    ch.ledger.rows[0].verdict = ledger.FAILS  # as if a failing cell had been skipped past
    with pytest.raises(AssertionError, match="a holds"):
        ch.finish()


# --- the training history ----------------------------------------------------------------------


def _history() -> train.History:
    models = [torch.nn.Linear(2, 1) for _ in range(2)]
    x = torch.ones(8, 2)

    def loss(model, batch):
        return (model(batch[0]) ** 2).mean()

    def measure(step, members):
        return {"members": [{"w": float(m.weight.detach().sum()), "step_twice": 2 * step} for m in members]}

    return train.train(
        models,
        loss,
        lambda g: (x,),
        steps=4,
        lr=0.1,
        optimizer="sgd",
        generators=[runtime.generator(0), runtime.generator(1)],
        log_every=2,
        checkpoint_every=2,
        on_checkpoint=measure,
    )


def test_history_reads_measures_as_member_by_checkpoint_arrays():
    h = _history()
    assert isinstance(h, train.History) and isinstance(h, dict)
    assert h.steps.tolist() == [0, 2, 4]
    assert h.curve("step_twice").tolist() == [[0, 4, 8], [0, 4, 8]]
    w = h.curve("w")
    assert w.shape == (2, 3) and not np.allclose(w[:, 0], w[:, -1])  # training moved the weights
    assert h.member(1)[2] == {"w": w[1, 2], "step_twice": 8, "step": 4}
    assert h.loss_curve().shape == (2, 2) and h["step"] == [2, 4]


def test_history_survives_the_cache_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("ICLBOOK_CACHE", str(tmp_path))
    model = [torch.nn.Linear(2, 1)]
    first = train.cached_training("07", "h", {"a": 1}, model, _history, uses="iclbook.train")
    again = train.cached_training("07", "h", {"a": 1}, model, _history, uses="iclbook.train")
    assert not first["cached"] and again["cached"] and isinstance(again, train.History)
    assert np.array_equal(first.curve("w"), again.curve("w"))


def test_history_says_what_is_missing():
    with pytest.raises(ValueError, match="no checkpoints"):
        train.History(checkpoints=[]).curve("w")
    with pytest.raises(KeyError, match="members"):
        train.History(checkpoints=[{"step": 0, "error": [0.1, 0.2]}]).curve("error")


# --- the weight cache is keyed on the code that trains -----------------------------------------


def _names(module: str) -> set[str]:
    root = Path(iclbook.__file__).parent
    return {str(p.relative_to(root)) for p in runtime.module_sources(module)}


def test_cache_key_hashes_the_training_module_and_what_it_imports():
    ch4 = _names("iclbook.contextual.training")
    assert {"contextual/training.py", "contextual/model.py", "implicit/dual_form.py", "runtime.py", "train.py"} <= ch4
    # a package __init__ that only re-exports, and a config module (keyed by value), stay out
    assert "contextual/__init__.py" not in ch4 and "contextual/config.py" not in ch4
    for module in ("iclbook.patterns", "iclbook.induction", "iclbook.contextual"):
        names = _names(_training_module(module))
        assert "implicit/hf.py" not in names and "implicit/retrain.py" not in names  # HF edits retrain nothing
        assert not any(n.endswith("config.py") or n in ("ledger.py", "records.py", "plots.py") for n in names), names
    assert runtime.source_digest("iclbook.contextual.training") == runtime.source_digest("iclbook.contextual.training")
    assert runtime.source_digest() != runtime.source_digest("iclbook.contextual.training")  # all files
    with pytest.raises(ValueError, match="not a module of the iclbook library"):
        runtime.module_sources("iclbook.nope")


def test_a_modules_imports_are_read_again_when_its_file_changes(tmp_path):
    """module_sources parses each file's imports once per version of the file (every cache key
    reads them): an edit that changes the file is read again."""
    path = tmp_path / "m.py"
    path.write_text("import a\n")
    assert runtime._imports(path) == [(None, "", ["a"])]
    assert runtime._imports(path) == [(None, "", ["a"])]  # the memo
    path.write_text("from .b import c, d\n")
    assert runtime._imports(path) == [(1, "b", ["c", "d"])]


def _training_module(package: str) -> str:
    """The module of ``package`` that trains (its ``training`` room where it has one)."""
    import importlib  # noqa: PLC0415

    module = importlib.import_module(package)
    return f"{package}.training" if hasattr(module, "__path__") else package  # a package has rooms


def test_cache_key_changes_with_the_source_it_uses(monkeypatch):
    key = runtime.cache_key("01", "main", {"a": 1}, uses="iclbook.contextual.training")
    assert key == runtime.cache_key("01", "main", {"a": 1}, uses="iclbook.contextual.training")
    monkeypatch.setattr(runtime, "source_digest", lambda *m: "edited")
    assert runtime.cache_key("01", "main", {"a": 1}, uses="iclbook.contextual.training") != key


def _chapter_configs():
    import importlib  # noqa: PLC0415

    for number, row in chapter.CHAPTERS.items():
        module = importlib.import_module(f"iclbook.{row['module']}")
        for profile, cfg in getattr(module, "CONFIGS", {}).items():
            yield f"{number}-{profile}", cfg


def _moved(value):
    """Another value of a config field's type: what an edit of that field would write."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-edited"
    if isinstance(value, tuple):
        return value[:-1] if value else (1,)
    return None


@pytest.mark.parametrize("name,cfg", list(_chapter_configs()), ids=lambda x: x if isinstance(x, str) else "")
def test_a_threshold_edit_keeps_the_cache_key_and_a_training_edit_changes_it(name, cfg):
    """Every chapter's configs: editing a field declared with ``runtime.check`` (a threshold, the
    size of a measurement made after training) leaves every cache key as it was, so it retrains
    nothing; editing any other field changes the key. Configs without check fields fail here."""
    import dataclasses  # noqa: PLC0415

    checks = runtime.check_fields(cfg)
    assert checks, f"config {name} declares no check field: its thresholds would retrain its models"
    key = runtime.cache_key("00", "m", cfg, uses="iclbook.contextual.training", seeds=[0])
    for f in dataclasses.fields(cfg):
        edited = _moved(getattr(cfg, f.name))
        if edited is None:
            continue
        other = runtime.cache_key(
            "00", "m", dataclasses.replace(cfg, **{f.name: edited}), uses="iclbook.contextual.training", seeds=[0]
        )
        if f.name in checks:
            assert other == key, f"{name}: the check field {f.name} changes the cache key"
        else:
            assert other != key, f"{name}: the trained field {f.name} does not change the cache key"


def test_trained_part_leaves_out_check_fields_and_keeps_derived_sizes():
    import dataclasses  # noqa: PLC0415

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        width: int = 4
        bar: float = runtime.check(0.5)

        @property
        def double(self) -> int:
            return 2 * self.width

    assert runtime.check_fields(Cfg()) == ("bar",)
    assert runtime.trained_part(Cfg()) == {"width": 4, "@double": 8}
    assert runtime.trained_part(Cfg(bar=0.9)) == runtime.trained_part(Cfg())
    assert runtime.trained_part({"a": 1}) == {"a": 1}  # not a dataclass: as it is


# --- the Markdown table helper -------------------------------------------------------------------


def test_table_escapes_pipes_and_line_breaks_and_checks_its_shape():
    md = ledger.table(["task", "acc."], [["a|b", 0.5], ["two\nlines", "x"]], align="lr")
    lines = md.split("\n")
    assert lines[:2] == ["| task | acc. |", "|---|--:|"]
    assert lines[2] == "| a\\|b | 0.5 |" and lines[3] == "| two lines | x |"
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        ledger.table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="one of 'l', 'r', 'c'"):
        ledger.table(["a"], [[1]], align="x")
