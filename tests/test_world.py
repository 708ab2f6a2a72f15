"""Chapter 2's second world (iclbook.implicit.world) and the model-free readers (readers)."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
import torch

from iclbook.implicit import data, readers, world


def test_datasets_are_reproducible_and_balanced_in_expectation():
    a = world.make_dataset("sst2", 200, 3, split="dev")
    b = world.make_dataset("sst2", 200, 3, split="dev")
    assert a.inputs == b.inputs and torch.equal(a.classes, b.classes)
    c = world.make_dataset("sst2", 200, 3, split="test")
    assert a.inputs != c.inputs
    assert 0.35 < float(a.classes.float().mean()) < 0.65
    # the sense is a property of the data set, the same in every split
    assert a.meaning == c.meaning == world.sense("sst", world.TASK_SENSE["sst2"])


def test_senses_are_fixed_and_never_empty_a_class_or_valence():
    """Sense 0 is the canonical meaning; every other sense flips a fixed DRIFT of the words,
    spread evenly over the groups, so every valence and class keeps words."""
    rng = random.Random(0)
    for family in ("sst", "mr", "kind", "topic"):
        n_words = len(world._family_words(family))
        assert world.sense(family, 0).flipped == frozenset()
        flips = [world.sense(family, i).flipped for i in range(1, world.SENSES)]
        assert len(set(flips)) == world.SENSES - 1  # distinct senses
        assert all(len(f) == round(world.DRIFT * n_words) for f in flips)
        assert flips[0] == world.sense(family, 1).flipped  # fixed, not drawn anew
        for drift in (0.0, world.DRIFT, 0.5, 1.0):
            meaning = world.draw_meaning(family, rng, drift)
            assert len(meaning.flipped) == round(drift * n_words)
            sizes = sorted(len(ws) for ws in world._lexicon(family, meaning).values())
            assert sizes[0] > 0 and sizes[-1] - sizes[0] <= 2, (family, drift, sizes)
    assert world.draw_meaning("cb", rng, 0.5).flipped == frozenset()
    with pytest.raises(ValueError, match="sense"):
        world.sense("sst", world.SENSES)


def test_the_sense_reader_finds_a_data_set_s_sense():
    """With 16 demonstrations, the ideal reader that infers the sense reads SST-2 about as well
    as the Bayes reader that is told it, and far better than the canonical meanings."""
    pool = world.make_dataset("sst2", 64, 0, split="train")
    test = world.make_dataset("sst2", 400, 0, split="test")
    demos = [(x, int(y)) for x, y in zip(pool.inputs[:16], pool.classes)]
    acc = float((world.sense_reader(test.task, demos, test.inputs) == test.classes).float().mean())
    ref = world.reference_accuracy("sst2", 400, 0)
    assert acc > ref["whole_input"] - 0.03 and acc > ref["canonical"] + 0.1
    # with no demonstrations it is the best zero-shot reader: the query's own words say
    # something of its sense, so it beats the canonical meanings, and the demonstrations add more
    assert ref["canonical"] + 0.03 < ref["senses"] < acc - 0.03


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        world.make_dataset("sst2", 0, 0)
    with pytest.raises(ValueError, match="split"):
        world.make_dataset("sst2", 5, 0, split="eval")
    with pytest.raises(ValueError, match="unknown task"):
        world.make_dataset("imdb", 5, 0)
    with pytest.raises(ValueError, match="not in the inference world"):
        world.encode(["zib"])


def test_pretraining_never_shows_the_evaluation_templates():
    rows = world.pretraining_batch(64, 192, random.Random(0))
    held = torch.tensor([world.TOKEN_ID[w] for w in world.HELD_OUT])
    assert not torch.isin(rows, held).any()
    assert "Label:" in world.HELD_OUT and "Answer:" in world.HELD_OUT
    # every row is full (no padding) and starts with BOS
    assert (rows[:, 0] == world.TOKEN_ID[data.BOS]).all()
    assert not (rows == world.TOKEN_ID[data.PAD]).any()


def test_the_trial_switches_change_formats_and_documents_only():
    """p_word_formats gives catalogues formats of ordinary words; p_template_words puts the
    template words in documents, never before a label; both off draw nothing."""
    args = (48, 192)
    base = world.pretraining_batch(*args, random.Random(1), p_catalogue=1.0, p_repeat=0.0)
    off = world.pretraining_batch(
        *args, random.Random(1), p_catalogue=1.0, p_repeat=0.0, p_word_formats=0.0, p_template_words=0.0
    )
    assert torch.equal(base, off)
    fmt = world.pretraining_batch(*args, random.Random(1), p_catalogue=1.0, p_repeat=0.0, p_word_formats=1.0)
    markers = set(world.FORMATS["marker"]) | {w for w in world.FORMATS["prefix"] if w}
    seen = {world.VOCAB[i] for i in fmt.flatten().tolist()}
    assert not seen & (markers - set(world.FORMAT_WORDS))  # no fixed format word left
    assert not seen & set(world.HELD_OUT)
    docs = world.pretraining_batch(*args, random.Random(1), p_catalogue=0.0, p_repeat=0.0, p_template_words=1.0)
    held = torch.tensor([world.TOKEN_ID[w] for w in world.HELD_OUT])
    assert torch.isin(docs, held).sum() >= 48  # each row has a document or more, each one word
    after = docs[:, 1:][torch.isin(docs[:, :-1], held)]
    labels = torch.tensor([world.TOKEN_ID[w] for t in world.TASKS.values() for w in t.labels])
    assert torch.isin(after, labels).float().mean() < 0.05  # a word of the text, not a marker


def test_negation_flips_a_polarity_word():
    task = data.TASKS["sst2"]
    assert world.word_features(task, ["superb", "fine"]).item() == 1.5
    assert world.word_features(task, ["not", "superb", "fine"]).item() == -0.5


def test_cb_needs_the_premise():
    rng = random.Random(0)
    for y in range(3):
        x = world._cb_sentence(y, rng)
        q = x.index("Question:")
        who, prop = x[q + 1], x[q + 3]
        premise = {(x[i], x[i + 2]) for i in (0, 4)}
        people = {p for p, _ in premise}
        if y == 0:
            assert (who, prop) in premise
        elif y == 1:
            assert (who, world.ANTONYM[prop]) in premise
        else:
            assert who not in people


def test_one_word_is_a_weak_witness_and_the_whole_input_a_strong_one():
    """The design: one content word names an SST-2 input's class about 60% of the time, the
    whole input about 90% (the data set's own meanings read, negation read)."""
    task = data.TASKS["sst2"]
    ds = world.make_dataset("sst2", 600, 0, split="train")
    whole = torch.tensor([float(world.word_features(task, x, ds.meaning)) > 0 for x in ds.inputs])
    assert 0.85 < float((whole.long() == ds.classes).float().mean()) < 0.97
    rng = random.Random(0)
    lex = world._lexicon("sst", ds.meaning)
    sign = {w: v > 0 for v, ws in lex.items() for w in ws}
    one = [sign[rng.choice([w for w in x if w in sign])] for x in ds.inputs]
    assert 0.5 < float((torch.tensor(one).long() == ds.classes).float().mean()) < 0.7


def test_readers():
    demos = [(["a", "zib", "b"], 0), (["c", "tok", "d"], 1), (["a", "zib", "e"], 0), (["f", "tok", "a"], 1)]
    queries = [["zib", "q"], ["tok", "a"], ["none"]]
    assert readers.one_token(demos, queries, 2).tolist() == [0, 1, 0]
    assert readers.closest_demo(demos, queries, 2).tolist() == [0, 1, 1]  # no overlap: the latest
    # ties in overlap go to the latest demonstration
    assert readers.closest_demo(demos, [["a"]], 2).tolist() == [1]
    with pytest.raises(ValueError, match="at least one"):
        readers.one_token([], queries, 2)
    with pytest.raises(ValueError, match="0..1"):
        readers.closest_demo([(["a"], 2)], queries, 2)


def test_the_lookup_world_is_read_by_one_token_and_the_inference_world_is_not():
    """The one-token reader on each world's prompts: near-perfect on the first world's cue
    words, far from it on the inference world (16 demonstrations, binary SST-2)."""
    accs = {}
    for name, make in (("lookup", data.make_dataset), ("inference", world.make_dataset)):
        pool, test = make("sst2", 64, 0, split="train"), make("sst2", 300, 0, split="test")
        demos = [(pool.inputs[i], int(pool.classes[i])) for i in range(16)]
        pred = readers.one_token(demos, test.inputs, 2)
        accs[name] = float((pred == test.classes).float().mean())
    assert accs["lookup"] > 0.9 and accs["inference"] < 0.75


def test_retrain_writes_a_loadable_inference_model(tmp_path):
    from iclbook.implicit import inference, retrain

    args = ["--world", "inference", "--steps", "2", "--save-every", "2", "--out", str(tmp_path)]
    retrain.main([*args, "--model", "d_ff=128", "--set", "p_echo=0.5"])
    model, record = inference.load(tmp_path)
    assert record["world"] == "inference" and record["model"]["positions"] == "sinusoidal"
    assert record["model"]["d_ff"] == 128 and record["pretrain"]["p_echo"] == 0.5  # a trial's overrides
    for bad in (["--model", "width=3"], ["--set", "p_echo"]):
        with pytest.raises(SystemExit, match="FIELD=VALUE"):
            retrain.main([*args, *bad])
    assert model.cfg.vocab == len(world.VOCAB) and model.layers[0].self_attn.alibi is None
    assert {"zs_sst2", "icl_cb", "own_zs_sst2", "own_icl_cb"} <= set(record["evals"][-1])


def test_the_in_training_reading_reads_the_templates_and_pretraining_s_own_format():
    """world_evaluation reads each task twice, in the held-out template and in OWN_FORMAT (a
    format of pretraining's catalogues), on the same demonstrations and test examples."""
    from iclbook.implicit import probe, retrain
    from iclbook.implicit.model import LMConfig, TinyLM

    assert all(w in world.FORMATS[k] for k, w in world.OWN_FORMAT.items())
    assert not set(world.OWN_FORMAT.values()) & set(world.HELD_OUT)
    torch.manual_seed(0)
    model = TinyLM(LMConfig(vocab=len(world.VOCAB), d_model=16, heads=2, layers=1, d_ff=32, positions="sinusoidal"))
    model.eval()
    out = retrain.world_evaluation(test_n=12, k=4, names=("sst2",))(model)
    assert set(out) == {"zs_sst2", "icl_sst2", "own_zs_sst2", "own_icl_sst2"}
    test = world.make_dataset("sst2", 12, 10**6, split="test")
    pred = probe.predict(model, test, [], codec=world.WORLD)
    assert out["zs_sst2"] == round(probe.accuracy(pred, test), 4)  # the template reading as before
    prompt = world.WORLD.prompt(replace(test.task, **world.OWN_FORMAT), [], test.inputs[0])[0]
    assert world.TOKEN_ID["item"] in prompt and world.TOKEN_ID["tag"] in prompt


def test_gate_rows_reads_a_run():
    from types import SimpleNamespace

    from iclbook.implicit import inference

    test = world.make_dataset("agnews", 40, 0)
    pool = world.make_dataset("agnews", 16, 0, split="train")
    demos = [(x, test.task.labels[int(y)]) for x, y in zip(pool.inputs, pool.classes)]
    run = SimpleNamespace(test=test, demos=demos, acc={"Z": 0.3, "I": 0.8})
    row = inference.gate_rows({"agnews": run})["agnews"]
    assert row["chance"] == 0.25 and row["I"] == 0.8
    assert 0.0 <= row["closest"] <= 1.0 and 0.0 <= row["one_token"] <= 1.0


@pytest.mark.parametrize("name", ["sst2", "sst5", "subj", "agnews"])
def test_the_bayes_reader_s_likelihoods_are_the_generator_s_frequencies(name):
    """The Bayes reader's P(group | class) (worked out from the rules) against the frequencies of
    the groups in inputs that :func:`world.sentence` writes: an independent check of the one by
    the other."""
    task = data.TASKS[name]
    family = world.FAMILY[name]
    meaning = world.Meaning(family)
    lex = world._lexicon(family, meaning)
    where = {w: g for g, ws in lex.items() for w in ws}
    rng = random.Random(0)
    table = world._log_likelihoods(name).exp()
    assert torch.allclose(table.sum(1), torch.ones(task.n_classes, dtype=torch.float64))
    for y in range(task.n_classes):
        counts = torch.zeros(table.shape[1], dtype=torch.float64)
        for _ in range(1500):
            negate = False
            for w in world.sentence(task, y, meaning, rng):
                if w == world.NEGATOR and family in world.POLARITY:
                    negate = True
                    continue
                if w in where:
                    g = -where[w] if negate else where[w]
                    counts[world.VALENCES.index(g) if family in world.POLARITY else g] += 1
                negate = False
        assert torch.allclose(counts / counts.sum(), table[y], atol=0.015), (y, counts / counts.sum(), table[y])


def test_the_bayes_reader_beats_the_mean_valence_on_graded_classes():
    """On SST-5's five levels the mean valence confuses strong inputs with mild ones; the Bayes
    reader (the ceiling of the gate table) does not, and on SST-2 the two agree closely."""
    for name, margin in (("sst5", 0.1), ("sst2", -0.03)):
        task = data.TASKS[name]
        ds = world.make_dataset(name, 400, 0, split="test")
        bayes = torch.tensor([world._rule(task, x, ds.meaning) for x in ds.inputs])
        mean = torch.tensor([float(world.word_features(task, x, ds.meaning)) for x in ds.inputs])
        naive = mean.sub(-2).round().clamp(0, 4).long() if task.n_classes == 5 else (mean > 0).long()
        acc_bayes, acc_naive = (float((p == ds.classes).float().mean()) for p in (bayes, naive))
        assert acc_bayes > acc_naive + margin, (name, acc_bayes, acc_naive)


def test_the_one_token_reader_does_not_depend_on_the_hash_seed():
    """Ties between words go to the first in the query: the same predictions in processes with
    different string hashes (a set's order would change with PYTHONHASHSEED)."""
    import subprocess
    import sys

    code = (
        "from iclbook.implicit import readers, world;"
        "p = world.make_dataset('agnews', 16, 0, split='train');"
        "t = world.make_dataset('agnews', 300, 0);"
        "d = [(x, int(y)) for x, y in zip(p.inputs, p.classes)];"
        "print(readers.one_token(d, t.inputs, 4).tolist())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout
        for h in ("1", "2", "3")
    }
    assert len(outs) == 1


def test_the_momentum_study_reads_each_model_on_the_same_prompts(tmp_path):
    """momentum_study reads a retrained model's momentum and seed from its record, and every model
    on the same demonstrations; momentum_contrast is a Welch interval with a relabelling null."""
    from iclbook.implicit import inference, retrain

    for eta, seed in ((0.0, 1), (0.9, 2)):
        args = ["--world", "inference", "--steps", "2", "--save-every", "2", "--seed", str(seed)]
        retrain.main([*args, "--momentum", str(eta), "--model", "d_model=16", "--out", str(tmp_path / f"m{seed}")])
    held_out = inference.held_out_text(3, seed=123)
    assert held_out.shape == (3, 257)
    assert torch.equal(held_out, inference.held_out_text(3, seed=123))
    pool, test = world.make_dataset("sst2", 20, 0, split="train"), world.make_dataset("sst2", 8, 0)
    folders = [tmp_path / "m1", tmp_path / "m2"]
    rows = inference.momentum_study(
        folders, held_out, {"sst2": (pool, test)}, 4, lambda: torch.Generator().manual_seed(0)
    )
    assert [(r["eta"], r["seed"]) for r in rows] == [(0.0, 1), (0.9, 2)]
    assert all(r["ppl"] > 1.0 and 0.0 <= r["icl"] <= 1.0 for r in rows)
    kinds = inference.perplexity_by_kind(folders, 2, seed=5)
    assert [(r["eta"], r["seed"]) for r in kinds] == [(0.0, 1), (0.9, 2)]
    assert all(r[k] > 1.0 for r in kinds for k in (*inference.ROW_KINDS, "copy"))
    fake = [{"eta": e, "ppl": v} for e, vs in ((0.0, (10.0, 10.2, 10.1)), (0.9, (11.0, 11.3, 11.1))) for v in vs]
    out = inference.momentum_contrast(fake, "ppl", 0.9)
    assert out["diff"] == pytest.approx(1.0333333) and out["interval"][0] > 0
    assert out["base"] == pytest.approx(10.1)
    assert out["passes"] and out["splits"] == 20
    assert not out["null_passes"] and out["null_diff"] == pytest.approx(0.0, abs=1e-12)  # mirrors
    assert not out["far_passes"] and out["far_diff"] < out["diff"]  # no mixed arm shows it
    down = inference.momentum_contrast(fake, "ppl", 0.9, sign=-1)
    assert not down["passes"] and down["interval"] == out["interval"]  # the same interval, read down
    # a tight arm makes Welch's interval exclude 0, but the split is not the most extreme of the
    # 20: the permutation part of the rule refuses it
    close = [{"eta": e, "ppl": v} for e, vs in ((0.0, (0.0, 1.0, 3.0)), (0.9, (2.0, 2.01, 2.02))) for v in vs]
    c = inference.momentum_contrast(close, "ppl", 0.9)
    assert not c["passes"]
    with pytest.raises(ValueError, match="sign"):
        inference.momentum_contrast(fake, "ppl", 0.9, sign=0)


def test_the_shipped_seeds_and_momentum_study_match_their_recipes():
    """The shipped model, its other pretraining seeds and their momentum-0.9 runs are the recipe
    as it stands (the library's InferencePretrainConfig, seed aside); the momentum study's nine
    runs are that recipe at 24 rows a step; each run is named by its momentum and seed."""
    import dataclasses
    import json

    from iclbook.implicit import inference, pretrain

    recipe = dataclasses.asdict(pretrain.InferencePretrainConfig())
    for folders, eta in (
        (inference.seed_folders(), 0.0),
        (inference.momentum_folders(inference.MOMENTUM48_FOLDER), 0.9),
    ):
        records = [json.loads((f / "tinylm.json").read_text()) for f in folders]
        assert [r["pretrain"]["seed"] for r in records] == [0, 1, 2]
        for r in records:
            assert r["pretrain"] == {**recipe, "seed": r["pretrain"]["seed"]}
            assert r["model"]["momentum"] == eta and r["trained_steps"] == recipe["steps"]
    study = inference.momentum_folders()
    assert len(study) == 9
    for f in study:
        r = json.loads((f / "tinylm.json").read_text())
        assert f.name == f"eta{r['model']['momentum']}_seed{r['pretrain']['seed']}"
        assert r["pretrain"]["batch"] == 24 and r["trained_steps"] == recipe["steps"]
        # the recipe's other fields, those the study's records carry
        assert all(r["pretrain"][k] == recipe[k] for k in r["pretrain"] if k not in ("batch", "seed"))


def test_held_out_rows_of_one_kind_are_that_kind():
    """held_out_text(kind=...) draws one kind of row alone: a repeated row repeats its block, a
    catalogue carries tags after its markers, a document neither; an unknown kind is refused."""
    from iclbook.implicit import inference

    rep = inference.held_out_text(4, seed=1, kind="repeat")
    doc = inference.held_out_text(4, seed=1, kind="document")
    cat = inference.held_out_text(4, seed=1, kind="catalogue")
    assert rep.shape == doc.shape == cat.shape == (4, 257)
    for row in rep.tolist():  # some later window of the row already occurred earlier in it
        assert any(row[i : i + 8] == row[j : j + 8] for i in range(128, 136) for j in range(1, i))
    markers = world.LABEL_MARKERS
    assert torch.isin(cat, markers).sum(1).min() > 5
    assert not torch.isin(doc, torch.tensor([world.TOKEN_ID[w] for w in world.FORMATS["marker"]])).any()
    with pytest.raises(ValueError, match="kind"):
        inference.held_out_text(2, seed=1, kind="poem")


def test_loss_fall_is_the_first_smoothed_step_below_the_level():
    from iclbook.implicit.inference import loss_fall

    steps = list(range(0, 1000, 100))
    assert loss_fall(steps, [2.0] * 5 + [1.5] * 5, level=1.8, window=3) == 600
    assert loss_fall(steps, [2.0] * 10) is None
    assert loss_fall(steps, [1.0, 3.0] * 5, level=1.8, window=1) == 0
