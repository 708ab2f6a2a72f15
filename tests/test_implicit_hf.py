"""Tests of chapter 2's real-model path (iclbook.implicit.codec and .hf), offline: the text codec
against the word codec, the data set adapters on hand-made records, and a whole run on a tiny
random OPT. Nothing here downloads."""

import json
import math

import pytest
import torch

from iclbook.implicit import codec, experiment, hf, probe
from iclbook.implicit import data as tasks
from iclbook.implicit.model import LMConfig, TinyLM

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def text_codec():
    return codec.TextCodec(hf.word_tokenizer())


def as_text_demos(demos):
    return [(" ".join(x), y) for x, y in demos]


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_text_codec_gives_the_word_codecs_ids(text_codec, name):
    """Rendered as text and cut by a word-level transformers tokenizer, every prompt,
    demonstration span, finetuning example and label id is the word codec's, truncation included."""
    data = tasks.make_dataset(name, 12, seed=3)
    text = hf.as_text(data)
    demos = [(data.inputs[i], data.task.labels[int(data.classes[i])]) for i in range(8)]
    for max_len in (None, 60):
        for x, xt in zip(data.inputs[8:], text.inputs[8:]):
            assert text_codec.prompt(data.task, as_text_demos(demos), xt, max_len) == codec.WORDS.prompt(
                data.task, demos, x, max_len
            )
    x, y = demos[0]
    assert text_codec.example(data.task, " ".join(x), y) == codec.WORDS.example(data.task, x, y)
    assert text_codec.label_ids(data.task.labels) == codec.WORDS.label_ids(data.task.labels)
    assert text_codec.nonce_pool == tasks.NONCE_LABELS  # single tokens: all distinct


def test_text_path_reproduces_the_word_path_run(text_codec):
    """The same protocol through the text codec gives the same numbers, to the bit."""
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=1)).eval()
    cfg = experiment.Config(n_test=16, n_dev=8, k=4, pool=12, demo_seeds=(1, 2), lr_grid=(0.01, 0.1))
    words = experiment.run_task(model, "mr", cfg, seed=1)
    data = tuple(hf.as_text(d) for d in experiment.splits("mr", cfg, 1))
    text = experiment.run_task(model, "mr", cfg, seed=1, data=data, codec=text_codec)
    assert text.acc == words.acc and text.lr == words.lr and text.demo_seed == words.demo_seed
    assert torch.equal(text.records["I"]["out"], words.records["I"]["out"])


def test_codec_errors(text_codec):
    with pytest.raises(ValueError, match="reads strings"):
        text_codec.prompt(tasks.TASKS["sst2"], [], ["a", "word", "list"])
    with pytest.raises(ValueError, match="distinct tokens"):
        codec.WORDS.label_ids(["Positive", "Positive"])
    with pytest.raises(ValueError, match="nonce words"):
        probe.nonce_labels(tasks.TASKS["sst5"], torch.Generator(), pool=("dax", "wug"))
    cfg = experiment.Config(n_test=4, n_dev=4, k=2, pool=4)
    with pytest.raises(ValueError, match="given for 'mr'"):
        experiment.run_task(TinyLM(LMConfig(layers=1)), "mr", cfg, 0, data=experiment.splits("sst2", cfg, 0))


def test_text_codec_on_a_subword_tokenizer():
    """Label words are scored by their first token; words whose first tokens collide are refused,
    and the nonce pool keeps only words with distinct first tokens."""

    class Chars:  # a character tokenizer: "dax" and "dog" collide
        bos_token_id, eos_token_id, pad_token_id = 0, 1, None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [2 + ord(c) for c in text.strip()]}

    c = codec.TextCodec(Chars())
    assert c.pad_id == 1 and c.label_ids(["True", "False"]) == [2 + ord("T"), 2 + ord("F")]
    with pytest.raises(ValueError, match="distinct tokens"):
        c.label_ids(["bad", "big"])
    firsts = [w[0] for w in c.nonce_pool]
    assert len(firsts) == len(set(firsts)) and len(c.nonce_pool) >= 5
    ids, spans = c.prompt(tasks.TASKS["sst2"], [("fine", "Positive")], "dull")
    assert ids[0] == 0 and ids[spans[0][1]] == 1  # BOS, then SEP after the demonstration


# --- the real data sets, on hand-made records -----------------------------------------------


def test_records_become_paper_prompts(text_codec):
    cb = hf.from_records("cb", [{"premise": "The cat sat.", "hypothesis": "A cat sat", "label": 2}])
    assert cb.inputs == ["The cat sat. Question: A cat sat."] and cb.classes.tolist() == [2]
    assert (
        codec.TextCodec.text(cb.task, cb.inputs[0], "Neither")
        == "The cat sat. Question: A cat sat. True, False, or Neither? Answer: Neither"
    )
    sst2 = hf.from_records("sst2", [{"sentence": "a fine film ", "label": 1}])
    assert codec.TextCodec.text(sst2.task, sst2.inputs[0]) == "Sentence: a fine film Label:"
    agnews = hf.from_records("agnews", [{"text": "Stocks rose", "label": 2}])
    assert codec.TextCodec.text(agnews.task, agnews.inputs[0], "Business") == "News: Stocks rose Type: Business"


def test_record_errors():
    with pytest.raises(ValueError, match="outside"):
        hf.from_records("sst2", [{"sentence": "x", "label": -1}])  # GLUE's unlabelled test split
    with pytest.raises(ValueError, match="expected 'objective'"):
        hf.from_records("subj", [{"text": "x", "label": 0, "label_text": "subjective"}])
    # the same order in another case or with stray spaces is the same label
    ok = hf.from_records("subj", [{"text": "x", "label": 1, "label_text": " Subjective"}])
    assert ok.classes.tolist() == [1]
    with pytest.raises(ValueError, match="lacks field"):
        hf.from_records("mr", [{"sentence": "x", "label": 0}])
    with pytest.raises(ValueError, match="no records"):
        hf.from_records("mr", [])
    with pytest.raises(ValueError, match="unknown task"):
        hf.from_records("imdb", [])


def test_splits_of_a_real_task():
    def loader(src, split):
        n = 40 if split == src.train else 25
        return [{"text": f"{split} {i}", "label": i % 2} for i in range(n)]

    cfg = experiment.Config(n_test=10, n_dev=8, pool=16)
    pool, dev, test = hf.splits("mr", cfg, seed=3, loader=loader)
    assert (len(pool), len(dev), len(test)) == (16, 8, 10)
    assert not set(pool.inputs) & set(dev.inputs) and all(x.startswith("train") for x in pool.inputs)
    assert all(x.startswith("validation") for x in test.inputs)
    other = hf.splits("mr", cfg, seed=4, loader=loader)
    assert other[2].inputs == test.inputs and other[0].inputs != pool.inputs  # test fixed (seed 1)
    with pytest.raises(ValueError, match="training records"):
        hf.splits("mr", experiment.Config(n_test=10, n_dev=30, pool=16), seed=0, loader=loader)


# --- a whole run, offline --------------------------------------------------------------------


def test_offline_run_on_a_tiny_opt(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROGRESS", "0")
    out = tmp_path / "dry.json"
    hf.main(["--dry-run", "--profile", "smoke", "--tasks", "sst2", "cb", "--out", str(out)])
    record = json.loads(out.read_text())  # strict JSON: NaN written as null
    assert set(record["tasks"]) == {"sst2", "cb"}
    for r in record["tasks"].values():
        assert set(r["acc"]) >= {"Z", "I", "F", "nonce"} and 0 <= r["acc"]["I"] <= 1
        assert r["demonstrations_in_context"]["min"] == hf.CONFIGS["smoke"].k
        # computed, not NaN: a NaN would be written as null and silently drop the task's row
        assert all(isinstance(r["stats"][k], float) and math.isfinite(r["stats"][k]) for k in ("simaou", "kendall"))


def test_run_survives_demonstration_counts_that_vary_per_query(monkeypatch):
    """CB's inputs differ in length by a token, so a context limit that cuts the demonstrations
    keeps 4 of them for some queries and 5 for others (as 2,048 tokens did for the paper's CB and
    AGNews): every statistic, Kendall included, must use each prompt's own demonstrations."""
    monkeypatch.setenv("ICLBOOK_PROGRESS", "0")
    res = hf.run(
        hf.tiny_opt(0), hf.word_tokenizer(), ["cb"], cfg=hf.CONFIGS["smoke"], loader=hf.synthetic_loader, max_len=122
    )
    kept = res["cb"]["demonstrations_in_context"]
    assert (kept["min"], kept["max"]) == (4, 5)
    assert all(math.isfinite(res["cb"]["stats"][k]) for k in ("kendall", "kendall_q_zero"))  # every prompt ranked


def test_a_crash_keeps_finished_tasks_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROGRESS", "0")
    out = tmp_path / "run.json"
    real = experiment.run_task

    def crash_on_cb(model, name, *a, **k):
        if name == "cb":
            raise RuntimeError("out of memory (simulated)")
        return real(model, name, *a, **k)

    monkeypatch.setattr(experiment, "run_task", crash_on_cb)
    args = ["--dry-run", "--profile", "smoke", "--tasks", "sst2", "cb", "--out", str(out)]
    with pytest.raises(RuntimeError, match="simulated"):
        hf.main(args)
    first = json.loads(out.read_text())
    assert list(first["tasks"]) == ["sst2"] and first["dtype"] == "float32"
    monkeypatch.setattr(experiment, "run_task", real)
    ran = []
    monkeypatch.setattr(experiment, "run_task", lambda m, name, *a, **k: ran.append(name) or real(m, name, *a, **k))
    hf.main(args)
    second = json.loads(out.read_text())
    assert ran == ["cb"] and list(second["tasks"]) == ["sst2", "cb"]
    assert second["tasks"]["sst2"] == first["tasks"]["sst2"]
    with pytest.raises(SystemExit, match="another run"):
        hf.main(args[:-2] + ["--seed", "3", "--out", str(out)])
    hf.main(args + ["--fresh", "--tasks", "sst2"])
    assert list(json.loads(out.read_text())["tasks"]) == ["sst2"]


def test_dtype_option_and_memory_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_PROGRESS", "0")
    out = tmp_path / "bf16.json"
    hf.main(["--dry-run", "--profile", "smoke", "--tasks", "mr", "--dtype", "bfloat16", "--out", str(out)])
    assert json.loads(out.read_text())["dtype"] == "bfloat16"
    cfg = hf.CONFIGS["paper"]
    full = hf.memory_estimate(1_300_000_000, torch.float32, 24, 32, cfg)
    half = hf.memory_estimate(1_300_000_000, torch.float16, 24, 32, cfg)
    assert full["weights"] == pytest.approx(2 * half["weights"], rel=0.02) and full["records"] < 3


def test_record_memory_bounds_keep_what_the_statistics_read():
    """Bounded records (candidate columns, score rows cut to the query for later prompts) hold
    the same numbers as full ones where they overlap."""
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=1)).eval()
    data = tasks.make_dataset("mr", 6, seed=2)
    demos = [(data.inputs[i], data.task.labels[int(data.classes[i])]) for i in range(3)]
    prompts, _ = probe.build_prompts(data, demos, 256)
    cand = codec.WORDS.label_ids(data.task.labels)
    full = probe.record(model, prompts)
    small = probe.record(model, prompts, columns=cand, full_rows=2, tail=9)
    assert torch.equal(small["logprobs"], full["logprobs"][:, cand])
    for i, (a, b) in enumerate(zip(small["scores"], full["scores"])):
        assert torch.equal(a, b if i < 2 else b[..., -9:])
    with pytest.raises(ValueError, match="together"):
        probe.record(model, prompts, full_rows=2)


def test_load_split_asks_datasets_for_the_source(monkeypatch):
    """``load_split`` hands the source's path, config, split and revision to ``datasets``."""
    import sys
    import types

    calls = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda path, config, split, revision: calls.append((path, config, split, revision)) or []
    monkeypatch.setitem(sys.modules, "datasets", fake)
    src = hf.SOURCES["cb"]
    hf.load_split(src, src.eval)
    assert calls == [("aps/super_glue", "cb", "validation", None)]


def test_batches_shrink_for_long_prompts_and_large_vocabularies():
    model = hf.tiny_opt(seed=0)
    assert probe.vocab_size(model) == len(tasks.VOCAB)
    assert probe.vocab_size(TinyLM(LMConfig(layers=1))) == len(tasks.VOCAB)
    assert probe.rows_per_batch(model, [[0] * 100], cap=256) == 256
    model.config.vocab_size = 50_272  # OPT's vocabulary, 2,048 tokens
    assert probe.rows_per_batch(model, [[0] * 2048], cap=256) == 2**27 // (2048 * 50_272)
    assert probe.rows_per_batch(model, [[0] * 10**6], cap=256) == 1


def test_tiny_opt_is_seeded_without_touching_the_callers_stream():
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    a = hf.tiny_opt(seed=3)
    assert torch.equal(torch.rand(4), expected)
    b = hf.tiny_opt(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
