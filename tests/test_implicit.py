"""Tests of iclbook.implicit (Dai et al. 2023): exact identities in float64, metric sanity,
the K/V name filter, the tiny LM, the readings that decide the ledger rows (known answers), and
clear errors for bad inputs."""

import math

import pytest
import scipy.stats
import torch

from iclbook.implicit import data, dual_form, metrics, pretrain, probe
from iclbook.implicit.model import LMConfig, TinyLM, momentum_matrix

F64 = torch.float64
ATOL = 1e-10


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- dual form -----------------------------------------------------------------------------


def test_relaxed_icl_decomposes_exactly():
    d, dk = 8, 6
    w_k, w_v, w_q = rand(dk, d, seed=1), rand(dk, d, seed=2), rand(dk, d, seed=3)
    x_demo, x = rand(d, 11, seed=4), rand(d, 5, seed=5)
    q = w_q @ x[:, -1]
    r = dual_form.relaxed_icl(w_k, w_v, x_demo, x, q)
    assert torch.allclose(r["attention"], r["zsl"] + r["update"], atol=ATOL, rtol=0)
    outer = sum(torch.outer(w_v @ x_demo[:, i], w_k @ x_demo[:, i]) for i in range(11))
    assert torch.allclose(r["dW_ICL"], outer, atol=ATOL, rtol=0)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_sgd_is_linear_attention_over_error_signals(loss):
    d_in, d_out, n = 7, 4, 9
    w0, xs = rand(d_out, d_in, seed=1), rand(n, d_in, seed=2)
    ys = rand(n, d_out, seed=3) if loss == "mse" else torch.arange(n) % d_out
    r = dual_form.sgd_dual_form(w0, xs, ys, lr=0.1, loss=loss)
    assert torch.allclose(r["W"], w0 + r["dW"], atol=ATOL, rtol=0)
    x = rand(d_in, seed=4)
    attn = dual_form.linear_attention(r["E"], xs.T, x)
    assert torch.allclose(r["W"] @ x, w0 @ x + attn, atol=ATOL, rtol=0)


def test_ft_update_three_terms():
    d = 6
    w_k, w_v, dw_k, dw_v, x = (rand(d, d, seed=s) for s in range(5))
    r = dual_form.ft_update(w_k, w_v, 0.1 * dw_k, 0.1 * dw_v, x)
    assert torch.allclose(r["dW_FT"], r["direct"], atol=ATOL, rtol=0)


def test_softmax_is_convex_mix():
    dk, n = 5, 12
    k, v, q = rand(dk, n, seed=1), rand(3, n, seed=2), rand(dk, seed=3)
    demo = torch.arange(n) < 8
    r = dual_form.softmax_split(q, k, v, demo)
    assert 0 < float(r["lam"]) < 1
    assert torch.allclose(r["h"], (1 - r["lam"]) * r["h_zsl"] + r["lam"] * r["h_demo"], atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        dual_form.softmax_split(q, k, v, torch.ones(n, dtype=torch.bool))


def test_identity_holds_at_layer_one_only():
    d = 6
    weights = [tuple(0.3 * rand(d, d, seed=10 * l + j) for j in range(3)) for l in range(3)]
    res = dual_form.layerwise_residual(weights, rand(d, 7, seed=1), rand(d, 4, seed=2))
    assert float(res[0]) < ATOL
    assert (res[1:] > 1e-3).all()


def test_momentum_three_ways():
    v = rand(9, 4)
    explicit = dual_form.momentum_explicit(v, 0.7)
    assert torch.allclose(explicit, dual_form.momentum_recurrent(v, 0.7), atol=ATOL, rtol=0)
    m = momentum_matrix(9, 0.7, F64)
    assert torch.allclose(explicit, m @ v, atol=ATOL, rtol=0)
    assert float(m.diagonal().abs().max()) == 0.0


# --- metrics -------------------------------------------------------------------------------


def test_simaou_noise_null():
    """Deutch et al.'s point: normalising before differencing gives ~0.25 on pure noise."""
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 256
    z = torch.randn(n, d, generator=g, dtype=F64)
    i = z + math.sqrt(3) * torch.randn(n, d, generator=g, dtype=F64)
    f = z + math.sqrt(3) * torch.randn(n, d, generator=g, dtype=F64)
    norm = metrics.simaou(i, z, f).mean()
    raw = metrics.simaou(i, z, f, normalize=False).mean()
    assert abs(float(norm) - 0.25) < 0.02
    assert abs(float(raw)) < 0.01


def test_random_baselines_near_zero():
    g = torch.Generator().manual_seed(1)
    h_i, h_z = torch.randn(3000, 64, generator=g), torch.randn(3000, 64, generator=g)
    # zero-mean differences: the U[0,1) direction averages out
    assert abs(float(metrics.simaou_random(h_i, h_z, g).mean())) < 0.01
    a = torch.randn(2000, 20, generator=g)
    assert abs(float(metrics.kendall_tau(a, torch.rand(2000, 20, generator=g)).mean())) < 0.01


def tau_b_by_definition(x, y):
    """Kendall's tau-b from its pair counts, written out (an independent reference)."""
    conc = disc = tie_x = tie_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tie_x) * (conc + disc + tie_y))


def test_kendall_tau_b_with_ties():
    """tau-b on data with many ties equals the pair-count definition and scipy's kendalltau,
    row by row; tau-a would be smaller wherever ties are."""
    from scipy.stats import kendalltau

    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert float(metrics.kendall_tau(a, a)) == pytest.approx(1.0)
    assert float(metrics.kendall_tau(a, -a)) == pytest.approx(-1.0)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0])  # one discordant pair of six, no ties
    assert float(metrics.kendall_tau(a, b)) == pytest.approx(4 / 6)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 4, (3, 5, 30), generator=g).double()  # heavily tied rows
    y = torch.randint(0, 3, (3, 5, 30), generator=g).double()
    tau = metrics.kendall_tau(x, y)
    assert tau.shape == (3, 5) and tau.dtype == torch.float64
    for idx in [(0, 0), (1, 3), (2, 4)]:
        ref = tau_b_by_definition(x[idx].tolist(), y[idx].tolist())
        assert float(tau[idx]) == pytest.approx(ref, abs=1e-12)
        assert float(tau[idx]) == pytest.approx(kendalltau(x[idx].numpy(), y[idx].numpy()).statistic, abs=1e-12)
    assert math.isnan(float(metrics.kendall_tau(torch.ones(5), torch.arange(5.0))))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.kendall_tau(torch.ones(3), torch.ones(4))


def test_float32_softmax_creates_the_ties_float64_avoids():
    """A score row spanning a few hundred units, as finetuned ``<q'_j, q>`` rows do: in float32
    most softmax entries are exact zeros (ties that pull tau towards 0); in float64 the softmax
    keeps the ranking of the raw scores, so tau is unchanged by it."""
    g = torch.Generator().manual_seed(5)
    scores = 400 * torch.rand(2, 128, generator=g)
    other = scores + 40 * torch.randn(2, 128, generator=g)
    assert float((torch.softmax(scores, -1) == 0).float().mean()) > 0.5
    exact = metrics.kendall_tau(scores, other)
    assert torch.allclose(
        metrics.kendall_tau(metrics.attention_softmax(scores), metrics.attention_softmax(other)), exact
    )
    assert (metrics.kendall_tau(torch.softmax(scores, -1), torch.softmax(other, -1)) < exact - 0.1).all()


def test_rec2ftp_matched_null_on_hand_built_masks():
    # two strata; FT fixes examples 0, 1 (stratum 1) and 4 (stratum 0)
    z = [0, 0, 0, 0, 0, 0]
    f = [1, 1, 0, 0, 1, 0]
    i = [1, 1, 1, 0, 0, 0]
    s = [1, 1, 1, 0, 0, 0]
    # P(I right | Z wrong, s=1) = 1, (s=0) = 0; weights 2/3 and 1/3
    assert metrics.rec2ftp_matched_null(z, f, i, s) == pytest.approx(100 * 2 / 3)
    assert metrics.rec2ftp(z, f, i) == pytest.approx(100 * 2 / 3)
    assert metrics.rec2ftp_null(z, i) == pytest.approx(50.0)
    assert math.isnan(metrics.rec2ftp_matched_null([1, 1], [1, 1], [0, 0], [0, 1]))
    with pytest.raises(ValueError, match="one shape"):
        metrics.rec2ftp_matched_null([0], [1], [1], [0, 1])


def test_rec2ftp_on_hand_built_masks():
    z = [0, 0, 0, 0, 1, 0]
    f = [1, 1, 1, 0, 1, 1]
    i = [1, 0, 1, 1, 1, 1]
    # Z wrong & F right: examples 0, 1, 2, 5; of them ICL right: 0, 2, 5
    assert metrics.rec2ftp(z, f, i) == pytest.approx(75.0)
    # Z wrong: 0, 1, 2, 3, 5; ICL right among them: 0, 2, 3, 5
    assert metrics.rec2ftp_null(z, i) == pytest.approx(80.0)
    assert math.isnan(metrics.rec2ftp([1, 1], [1, 1], [0, 0]))


def test_simam_delta_and_mismatch():
    g = torch.Generator().manual_seed(2)
    m_z = torch.randn(50, 10, generator=g)
    assert torch.allclose(metrics.simam(m_z, 2 * m_z), torch.ones(50))
    upd = torch.randn(50, 10, generator=g)
    assert torch.allclose(metrics.simam_delta(m_z + upd, m_z, m_z + 3 * upd), torch.ones(50), atol=1e-5)
    idx = torch.arange(50)
    assert (metrics.mismatched(idx, g) != idx).all()


def test_bootstrap_ci_has_the_width_of_the_mean_s_standard_error():
    """For n values the 95% interval of their mean spans about 2 * 1.96 standard errors, centred
    on the mean; an interval of the values themselves (not of their mean) would be 20x wider."""
    g = torch.Generator().manual_seed(3)
    v = torch.randn(400, generator=g, dtype=F64)
    lo, hi = metrics.bootstrap_ci(v, g)
    se = float(v.std() / 400**0.5)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert abs((lo + hi) / 2 - float(v.mean())) < 0.25 * se
    lo90, hi90 = metrics.bootstrap_ci(v, g, level=0.9)
    assert hi90 - lo90 == pytest.approx(2 * 1.645 * se, rel=0.15)


def test_stratified_bootstrap_and_rate_interval():
    """The stratified interval is centred on the mean of the groups' means (not of the pooled
    values) and has its standard error; Wilson's interval keeps a width at 0% and 100%."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(400, generator=g, dtype=F64), 5 + torch.randn(100, generator=g, dtype=F64)
    lo, hi = metrics.stratified_bootstrap_ci([a, b, torch.zeros(0)], g)
    centre = float(a.mean() + b.mean()) / 2  # the pooled mean would be near 1
    se = 0.5 * (float(a.var() / 400) + float(b.var() / 100)) ** 0.5
    assert abs((lo + hi) / 2 - centre) < 0.25 * se and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert all(math.isnan(x) for x in metrics.stratified_bootstrap_ci([torch.zeros(0)], g))
    lo, hi = metrics.rate_interval(50.0, 400)
    assert (lo + hi) / 2 == pytest.approx(50.0) and hi - lo == pytest.approx(2 * 1.96 * 2.5, rel=0.01)
    lo, hi = metrics.rate_interval(100.0, 50)
    assert hi == 100.0 and 90 < lo < 100
    assert all(math.isnan(x) for x in metrics.rate_interval(80.0, 0))


def test_readers_of_the_lookup_probe_on_hand_built_demonstrations():
    """The cue-word reader and the Bayes reader, worked out by hand on SST-2 with three cues per
    class: demonstrations show cues a, b (Negative) and c (Positive)."""
    from iclbook.implicit import experiment as ex

    task = data.TASKS["sst2"]
    cues = {"zib", "tok", "mur", "pel", "gax", "von"}
    neg, pos = data.PRIOR["sst2"]
    demos = [(["the", "zib"], "Negative"), (["a", "tok"], "Negative"), (["it", "mur"], "Positive")]
    inputs = [
        ["the", "zib"],  # seen, Negative: certain
        ["the", "pel"],  # unseen, no prior word: Positive has 2 unseen cues, Negative 1
        [neg[0], neg[1], "pel"],  # two Negative words: 1 * .6 * .6 = .36 against 2 * .4 * .4 = .32
        [neg[0], pos[0], "pel"],  # one of each: .24 against .48
    ]
    test = data.Dataset(task, inputs, torch.tensor([0, 1, 0, 0]))
    cue = ex.reader_accuracy(test, demos, cues, 3, use_words=False)
    bayes = ex.reader_accuracy(test, demos, cues, 3)
    assert cue.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert bayes.tolist() == [1.0, 1.0, 1.0, 0.0]
    # a tie (one cue of each class shown, no prior word) scores one half
    tie = ex.reader_accuracy(data.Dataset(task, [["the", "pel"]], torch.tensor([0])), demos[1:], cues, 3)
    assert tie.tolist() == [0.5]
    runs = [{"seen": 1.0, "unseen": 0.6, "cue_reader_seen": 1.0, "cue_reader_unseen": 0.75}]
    assert ex.gain_kept(runs, 2) == pytest.approx(0.2) and ex.gain_kept(runs, 2, "cue_reader") == 0.5


# --- data, model, pretraining, probe ------------------------------------------------------


def test_tasks_and_prompts():
    for name in data.TASK_NAMES:
        dset = data.make_dataset(name, 30, seed=0)
        assert len(dset) == 30 and int(dset.classes.max()) < dset.task.n_classes
        ids, spans = data.icl_prompt(dset.task, [(dset.inputs[0], dset.task.labels[0])], dset.inputs[1])
        assert ids[0] == data.TOKEN_ID[data.BOS] and len(spans) == 1
        assert data.decode(ids[spans[0][1] : spans[0][1] + 1]) == data.SEP
    # the cue words are a property of the data set, the same in every split
    assert data.make_dataset("sst2", 5, 0).cues == data.make_dataset("sst2", 5, 9, split="dev").cues


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown task"):
        data.make_dataset("imdb", 10, 0)
    pool = data.make_dataset("sst2", 8, 0)
    with pytest.raises(ValueError, match="pool of 8"):
        probe.demonstrations(pool, 9, torch.Generator())
    model = TinyLM(LMConfig(layers=1))
    with pytest.raises(ValueError, match="no demonstrations"):
        probe.finetune_kv(model, [], lr=0.1)
    with pytest.raises(ValueError):
        data.encode(["not-a-word"])
    with pytest.raises(ValueError):
        LMConfig(d_model=10, heads=4)


def test_every_rate_in_one_pass_is_the_sequential_finetuning_where_sgd_is_stable():
    torch.manual_seed(0)
    for cfg in (LMConfig(layers=2), LMConfig(layers=3, positions="sinusoidal", mix=10, momentum=0.5)):
        model = TinyLM(cfg).eval()
        dset = data.make_dataset("sst2", 6, 0)
        ex = [data.ft_example(dset.task, x, dset.task.labels[int(y)]) for x, y in zip(dset.inputs, dset.classes)]
        rates = (0.001, 0.01, 0.05)
        stack = probe.finetune_kv_rates(model, ex, rates)
        test = data.make_dataset("sst2", 40, 1, split="test")
        preds = stack.predict(test)
        assert preds.shape == (len(rates), len(test))
        for r, lr in enumerate(rates):
            alone = dict(probe.finetune_kv(model, ex, lr).model.named_parameters())
            for name, p in stack.model.named_parameters():
                if any(f in name for f in probe.KV_FILTER):
                    assert torch.allclose(p[r], alone[name], atol=1e-6), (cfg, lr, name)
                else:  # everything else is the model's own, untouched
                    assert torch.equal(p, alone[name]) and torch.equal(p, dict(model.named_parameters())[name])
            tuned = probe.finetune_kv(model, ex, lr).model
            assert torch.equal(preds[r], probe.predict(tuned, test))
    with pytest.raises(ValueError, match="no demonstrations"):
        probe.finetune_kv_rates(model, [], rates)
    with pytest.raises(ValueError, match="learning rates"):
        probe.finetune_kv_rates(model, ex, (0.1, 0.0))
    with pytest.raises(ValueError, match="equal slices"):
        probe.StackedLinear(torch.nn.Linear(4, 3), 2)(torch.zeros(3, 5, 4))


def test_kv_filter_trains_only_keys_and_values():
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2))
    dset = data.make_dataset("sst2", 4, 0)
    ex = [data.ft_example(dset.task, x, dset.task.labels[int(y)]) for x, y in zip(dset.inputs, dset.classes)]
    res = probe.finetune_kv(model, ex, lr=0.5, keep_queries=True)
    before, after = dict(model.named_parameters()), dict(res.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == set(probe.kv_parameters(model))
    assert any(n.endswith("k_proj.bias") for n in changed)
    assert len(res.queries) == 4 and res.queries[0][0].shape[0] == len(ex[0]) - 1


def test_recorder_matches_model_and_right_padding():
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2)).eval()
    dset = data.make_dataset("agnews", 3, 0)
    prompts, _ = probe.build_prompts(dset, [(dset.inputs[0], "World")], max_len=256)
    prompts[1] = prompts[1][:-3]  # different lengths: right padding must not matter
    rec = probe.record(model, prompts)
    for i, p in enumerate(prompts):
        alone = probe.record(model, [p])
        assert torch.allclose(rec["out"][i], alone["out"][0], atol=1e-5)
        assert torch.allclose(rec["scores"][i], alone["scores"][0], atol=1e-5)
    # the recorded scores (ALiBi bias included) are the ones the model's attention softmaxes:
    # softmax(scores) applied to the values of the recorded (token-mixed) input gives the output
    n = len(prompts[0])
    with probe.Recorder(model) as r:
        model(torch.tensor([prompts[0]]))
    for layer, (_, attn) in enumerate(r.modules):
        s = r.scores(layer, 0, n - 1)
        assert s.shape == (4, n)
        v = attn.v_proj(r.x[layer][0]).view(n, 4, -1)
        out = attn.out_proj(torch.einsum("hn,nhd->hd", s.softmax(-1), v).reshape(-1))
        assert torch.allclose(out, r.out[layer][0, n - 1], atol=1e-5)


@pytest.mark.parametrize("positions, mix", [("alibi", 3), ("sinusoidal", 10)])
def test_record_runs_the_shared_demonstrations_once_and_keeps_the_whole_context(positions, mix):
    """Prompts that share their demonstrations (at least MIN_SHARED tokens) are recorded with the
    prefix run once: every output, query, score row (whole context, with and without the
    positional bias) and log-probability is the one of the whole prompt run alone."""
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2, positions=positions, mix=mix)).eval()
    dset = data.make_dataset("agnews", 8, 0)
    demos = [(x, dset.task.labels[int(y)]) for x, y in zip(dset.inputs[:4], dset.classes[:4])]
    prompts, _ = probe.build_prompts(dset, demos, max_len=256)
    assert probe.shared_prefix(prompts) >= probe.MIN_SHARED
    for offset in (0, 1):
        rec = probe.record(model, prompts, offset=offset, full_rows=3, tail=5, batch=3)
        for i, p in enumerate(prompts):
            alone = probe.record(model, [p[:8]] + [p], offset=offset)  # nothing shared: the plain path
            assert torch.allclose(rec["out"][i], alone["out"][1], atol=1e-5)
            assert torch.allclose(rec["q"][i], alone["q"][1], atol=1e-5)
            assert torch.allclose(rec["logprobs"][i], alone["logprobs"][1], atol=1e-5)
            for key in ("scores", "content"):
                whole = alone[key][1] if i < 3 else alone[key][1][..., -5:]
                assert rec[key][i].shape == whole.shape
                assert torch.allclose(rec[key][i], whole, atol=1e-5)


@pytest.mark.parametrize("positions, mix, momentum", [("alibi", 3, 0.0), ("sinusoidal", 0, 0.0), ("alibi", 3, 0.9)])
def test_tinylm_is_causal(positions, mix, momentum):
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2, positions=positions, mix=mix, momentum=momentum)).eval()
    ids = torch.randint(len(data.VOCAB), (1, 30))
    changed = ids.clone()
    changed[0, 20:] = torch.randint(len(data.VOCAB), (10,))
    with torch.no_grad():
        assert torch.allclose(model(ids)[0, :20], model(changed)[0, :20], atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        LMConfig(positions="rotary")


@pytest.mark.parametrize(
    "positions, mix, momentum", [("alibi", 3, 0.0), ("sinusoidal", 0, 0.0), ("alibi", 3, 0.9), ("alibi", 5, 0.0)]
)
def test_prefix_cache_equals_the_whole_pass(positions, mix, momentum):
    """model(suffix, past=remember(prefix)) = the suffix rows of model(prefix + suffix), also for
    prefixes shorter than the mixing window and for right-padded suffixes of several lengths."""
    torch.manual_seed(0)
    model = TinyLM(LMConfig(positions=positions, mix=mix, momentum=momentum)).eval()
    ids = torch.randint(len(data.VOCAB), (3, 40))
    with torch.no_grad():
        for p in (1, 2, 3, 25):
            ids[:, :p] = ids[0, :p]
            past = model.remember(ids[:1, :p])
            assert past.length == p
            assert torch.allclose(model(ids[:, p:], past=past), model(ids)[:, p:], atol=1e-5)
    with pytest.raises(ValueError, match="one prefix"):
        model.remember(ids)
    with pytest.raises(ValueError, match="longer than max_len"):
        model(torch.zeros(1, 250, dtype=torch.long), past=model.remember(ids[:1, :10]))


def test_scoring_with_a_shared_prefix_equals_the_plain_pass(monkeypatch):
    """label_logprobs runs shared demonstrations once; the scores must not change, also where
    long queries leave room for fewer demonstrations (the prefix is then the common part)."""
    torch.manual_seed(0)
    model = TinyLM(LMConfig()).eval()
    task = data.TASKS["cb"]
    dset = data.make_dataset("cb", 40, 0)
    pool = data.make_dataset("cb", 30, 1, split="train")
    demos = probe.demonstrations(pool, 12, torch.Generator().manual_seed(0))
    for max_len in (256, 120):
        prompts, spans = probe.build_prompts(dset, demos, max_len)
        assert probe.shared_prefix(prompts) >= probe.MIN_SHARED
        cand = data.encode(list(task.labels))
        fast = probe.label_logprobs(model, prompts, cand, batch=7)
        monkeypatch.setattr(probe, "MIN_SHARED", 10**9)
        slow = probe.label_logprobs(model, prompts, cand, batch=7)
        monkeypatch.undo()
        assert torch.allclose(fast, slow, atol=1e-5)
        assert len({len(s) for s in spans}) > 1 or max_len == 256


def test_shared_prefix():
    assert probe.shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert probe.shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps its last token
    assert probe.shared_prefix([[7], [7, 8]]) == 0
    assert probe.shared_prefix([]) == 0


def test_pretraining_lowers_the_loss():
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=1))
    cfg = pretrain.PretrainConfig(steps=30, batch=8, seq_len=64, warmup=5)
    hist = pretrain.pretrain(model, cfg, log_every=5)
    assert hist["loss"][-1] < hist["loss"][0] - 0.5


def test_momentum_model_runs_and_differs():
    torch.manual_seed(0)
    base = TinyLM(LMConfig(layers=1))
    mo = TinyLM(LMConfig(layers=1, momentum=0.5))
    mo.load_state_dict(base.state_dict())
    ids = torch.randint(len(data.VOCAB), (2, 20))
    a, b = base(ids), mo(ids)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6)  # no earlier token at position 0
    assert not torch.allclose(a[:, 5], b[:, 5])


def test_pipeline_runs_end_to_end_on_a_small_model():
    from iclbook.implicit import experiment as ex

    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2)).eval()
    cfg = ex.Config(
        n_test=12,
        n_dev=8,
        k=4,
        pool=16,
        demo_seeds=(1, 2),
        lr_grid=(0.01, 0.1),
        eval_seeds=1,
        kendall_examples=5,
        permutations=2,
        names=("sst2", "cb"),
    )
    g = torch.Generator().manual_seed(0)
    runs = {n: ex.run_task(model, n, cfg, seed=0) for n in cfg.names}
    for run in runs.values():
        stats = ex.statistics(run, g, kendall_examples=5)
        per = stats.pop("per_example")
        draws = stats.pop("simaou_mismatched_draws")  # one mean per random pairing
        assert len(draws) == 50 and stats["simaou_mismatched"] == pytest.approx(sum(draws) / 50)
        assert all(math.isfinite(v) for k, v in stats.items() if not k.startswith("rec2ftp"))
        assert torch.equal(per["simam_after_minus_before"], per["simam_after"] - per["simam_before"])
        # Kendall recomputed by hand for example 0, layer 0, as the official code does: ICL's scores
        # (their content part, without ALiBi's bias) over the kept demonstration tokens summed over
        # heads, finetuning's <q'_j, q_F>, both through a float64 softmax, then scipy's tau-b
        idx = torch.cat([torch.arange(a, b) for a, b in run.spans[0]])
        s_icl = run.records["I"]["content"][0].double().sum(1)[0, idx]
        q_f = run.records["F"]["q"][0][0].double()
        s_ft = torch.cat([run.ft.queries[j][0].double() @ q_f for j in range(len(run.spans[0]))])
        tau = scipy.stats.kendalltau(torch.softmax(s_icl, -1).numpy(), torch.softmax(s_ft, -1).numpy()).statistic
        assert abs(float(per["kendall"][0, 0]) - tau) < 1e-12
        assert per["simaou"].shape == (12, 2) and per["kendall"].shape[0] == 5
        # SimAOU recomputed by hand from the recorded attention outputs (one example, one layer),
        # the official code's way: normalise each output, then the cosine of the two differences
        h = {k: run.records[k]["out"].double()[3, 1] for k in ("Z", "I", "F")}
        unit = {k: v / v.norm() for k, v in h.items()}
        d_i, d_f = unit["I"] - unit["Z"], unit["F"] - unit["Z"]
        by_hand = float(d_i @ d_f / (d_i.norm() * d_f.norm()))
        assert abs(float(per["simaou"][3, 1]) - by_hand) < 1e-12
    flips = ex.order_flips(model, runs["sst2"], 2, g, n=6)
    assert set(flips) == {"ICL", "SGD", "GD"} and flips["GD"] < 1e-9  # full-batch GD ignores order
    masks = ex.order_flips(model, runs["sst2"], 2, torch.Generator().manual_seed(5), n=6, masks=True)
    assert masks["GD"].shape == (6,) and masks["GD"].dtype == torch.bool and not masks["GD"].any()
    # the predictions of Z, I and F are kept, and the label-shuffled nulls run on request
    run = runs["sst2"]
    assert all(torch.equal(run.pred[k] == run.test.classes, run.right[k]) for k in ("Z", "I", "F"))
    shuffled = ex.run_task(model, "sst2", cfg, seed=0, record=False, select_on_test=False, shuffled=True)
    assert {"I_shuffled", "F_shuffled"} <= set(shuffled.acc) and "I_shuffled" not in run.acc
    assert shuffled.acc["I"] == run.acc["I"] and shuffled.acc["F"] == run.acc["F"]
    dw = ex.delta_w_cosines(model, runs["sst2"], runs["cb"], n=3)
    assert dw["cos"].shape == (3, 2, 4) and torch.isfinite(dw["cos"]).all()
    emb = ex.untrained_like(model, seed=1, keep_embeddings=True)
    assert torch.equal(emb.embed.weight, model.embed.weight)
    assert not torch.equal(emb.layers[0].self_attn.k_proj.weight, model.layers[0].self_attn.k_proj.weight)
    again = ex.rerun(emb, runs["sst2"])
    assert again.records["I"]["out"].shape == runs["sst2"].records["I"]["out"].shape


def test_probes_work_on_a_hugging_face_model_offline():
    pytest.importorskip("transformers")
    from iclbook.implicit import hf

    model = hf.tiny_opt(seed=0)
    dset = data.make_dataset("sst2", 3, 0)
    prompts, _ = probe.build_prompts(dset, [(dset.inputs[0], "Positive")], max_len=256)
    ids = torch.tensor([prompts[0]])
    with probe.Recorder(model) as rec:
        out = model(ids, output_attentions=True)
    pos = ids.shape[1] - 1
    for layer, attn in enumerate(out.attentions):
        ours = torch.softmax(rec.scores(layer, 0, pos), -1)
        assert torch.allclose(ours, attn[0, :, pos, : pos + 1], atol=1e-5)
    ex = [data.ft_example(dset.task, x, dset.task.labels[int(y)]) for x, y in zip(dset.inputs, dset.classes)]
    tuned = probe.finetune_kv(model, ex, lr=0.5).model
    before, after = dict(model.named_parameters()), dict(tuned.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == set(probe.kv_parameters(model)) and len(changed) == 8  # 2 layers x (W, b) x (K, V)
    assert probe.label_logprobs(model, prompts, data.encode(dset.task.labels)).shape == (3, 2)


def test_shipped_weights_are_package_data():
    """Every file under weights/ is matched by a package-data glob of a declared package, so a
    non-editable install (Colab's) carries the checkpoints."""
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    lib = Path(pretrain.__file__).resolve().parents[2]
    setup = tomllib.loads((lib / "pyproject.toml").read_text())["tool"]["setuptools"]

    def globs(rel: str, pattern: str) -> bool:  # setuptools' "*" stops at "/"
        parts, pats = rel.split("/"), pattern.split("/")
        return len(parts) == len(pats) and all(fnmatch.fnmatch(a, b) for a, b in zip(parts, pats))

    files = [p for p in pretrain.WEIGHTS.rglob("*") if p.is_file() and p.suffix in (".pt", ".json")]
    assert len(files) >= 2
    for f in files:
        owners = [pkg for pkg in setup["packages"] if f.is_relative_to(lib / pkg.replace(".", "/"))]
        pkg = max(owners, key=len)
        rel = f.relative_to(lib / pkg.replace(".", "/")).as_posix()
        assert any(globs(rel, g) for g in setup["package-data"].get(pkg, [])), f


def test_perplexity_by_length_is_the_loss_of_cut_sequences():
    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=1)).eval()
    tokens = data.pretraining_batch(4, 30, torch.Generator().manual_seed(1))
    by_length = pretrain.perplexity_by_length(model, tokens, (5, 12, 30))
    with torch.no_grad():
        for L in (5, 12, 30):
            assert by_length[L] == pytest.approx(
                float(torch.exp(pretrain.lm_loss(model, tokens[:, : L + 1]))), rel=1e-5
            )
    with pytest.raises(ValueError, match="lengths"):
        pretrain.perplexity_by_length(model, tokens, (31,))


def test_pool_short_weights_rates_by_fixed_examples():
    from iclbook.implicit import experiment as ex

    a = {
        "k": 2,
        "n_fixed": 30,
        "acc": {"I": 0.8},
        "rec2ftp": 90.0,
        "null": 60.0,
        "matched_null": 80.0,
        "flips": {"ICL": 0.1, "SGD": 0.3},
    }
    b = {
        "k": 2,
        "n_fixed": 10,
        "acc": {"I": 0.6},
        "rec2ftp": 50.0,
        "null": 20.0,
        "matched_null": float("nan"),
        "flips": {"ICL": 0.3, "SGD": 0.1},
    }
    a["changed"], b["changed"] = 0.2, 0.04
    a["flip_masks"] = {"ICL": torch.tensor([True, False]), "SGD": torch.tensor([True, True])}
    b["flip_masks"] = {"ICL": torch.tensor([True]), "SGD": torch.tensor([False])}
    none = dict(b, n_fixed=0, rec2ftp=float("nan"), changed=0.0)
    p = ex.pool_short([a, b, none])
    assert p["n_fixed"] == 40 and p["seeds"] == 3
    assert p["rec2ftp"] == pytest.approx((90 * 30 + 50 * 10) / 40)
    assert p["matched_null"] == pytest.approx(80.0)  # a NaN seed has no say
    assert p["acc"]["I"] == pytest.approx(2 / 3) and p["flips"]["ICL"] == pytest.approx(0.7 / 3)
    assert p["changed"] == [0.2, 0.04, 0.0]
    # the order check: a seed where finetuning changed no prediction never counts
    assert p["order"]["seeds"] == 2 and p["order"]["ICL"] == pytest.approx(0.2)
    assert p["order"]["diff"].tolist() == [0.0, 1.0, -1.0]
    # ... nor one where it changed fewer than min_changed of them
    q = ex.pool_short([a, b, none], min_changed=0.05)
    assert (
        q["order"]["seeds"] == 1
        and q["order"]["SGD"] == pytest.approx(0.3)
        and q["order"]["diff"].tolist() == [0.0, 1.0]
    )
    assert q["flips"] == p["flips"]  # the flips over every seed are kept for the GD identity
    r = ex.pool_short([none], min_changed=0.05)
    assert r["order"]["seeds"] == 0 and math.isnan(r["order"]["SGD"]) and r["order"]["diff"].numel() == 0
    with pytest.raises(ValueError):
        ex.pool_short([])


def test_seeded_builders_leave_the_callers_random_stream_alone():
    """untrained_like seeds its own initialisation (issue 20: no global reseeding in the library)."""
    from iclbook.implicit import experiment as ex

    model = TinyLM(LMConfig(layers=1))
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = ex.untrained_like(model, seed=5)
    assert torch.equal(torch.rand(4), expected)
    b = ex.untrained_like(model, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_label_accuracy_by_context_counts_label_tokens_by_examples_seen():
    batch = data.pretraining_batch(16, 96, torch.Generator().manual_seed(0), p_plain=0.0)
    vocab = len(data.VOCAB)

    class Oracle(torch.nn.Module):  # predicts every next token right
        def forward(self, x):
            return (
                torch.nn.functional.one_hot(batch[:, 1:], vocab).double() if x.shape[1] == batch.shape[1] - 1 else None
            )

    class Wrong(torch.nn.Module):  # predicts every next token wrong
        def forward(self, x):
            return torch.nn.functional.one_hot((batch[:, 1:] + 1) % vocab, vocab).double()

    right, wrong = (pretrain.label_accuracy_by_context(m, batch) for m in (Oracle(), Wrong()))
    assert set(right) == {"acc_0_0", "acc_1_3", "acc_4_8", "acc_9_99"}
    assert all(v == 1.0 for v in right.values() if v == v) and all(v == 0.0 for v in wrong.values() if v == v)
    assert right["acc_0_0"] == 1.0 and right["acc_1_3"] == 1.0  # both buckets have label tokens


def test_load_shipped_refuses_weights_that_are_not_the_recorded_ones(tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(pretrain.WEIGHTS, folder, ignore=shutil.ignore_patterns("momentum"))
    model, record = pretrain.load_shipped(folder)  # the intact copy loads
    assert sum(p.numel() for p in model.parameters()) > 0 and record["sha256"]
    blob = bytearray((folder / "tinylm.pt").read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte in the weights
    (folder / "tinylm.pt").write_bytes(bytes(blob))
    with pytest.raises(RuntimeError, match="SHA-256"):
        pretrain.load_shipped(folder)
    (folder / "tinylm.json").unlink()
    with pytest.raises(FileNotFoundError, match="retrain"):
        pretrain.load_shipped(folder)


# --- the chapter's config: every field is checked, none trained ---------------------------------


def test_config_marks_every_field_as_a_check_and_keeps_the_profiles_values():
    """Chapter 2 trains no weight of its own (the model ships pretrained): every field of its
    config is read after training, so all are check fields and none keys a weight. The
    profile-dependent thresholds that used to be branches on the profile's name keep their values."""
    import dataclasses

    from iclbook import runtime
    from iclbook.implicit import config
    from iclbook.implicit import experiment as ex

    assert ex.CONFIGS is config.CONFIGS and ex.Config is config.Config and ex.STREAMS is config.STREAMS
    for cfg in config.CONFIGS.values():
        assert set(runtime.check_fields(cfg)) == {f.name for f in dataclasses.fields(cfg)}
        assert runtime.trained_part(cfg) == {}
    # what the shipped weights do depend on is trained, field by field
    assert runtime.check_fields(pretrain.PretrainConfig()) == () and runtime.check_fields(LMConfig()) == ()
    book, smoke, paper = (config.CONFIGS[p] for p in ("book", "smoke", "paper"))
    assert (book.margin, book.min_nonce, book.lexicon_tasks, book.momentum_tasks, book.judged) == (0.15, 4, 5, 6, True)
    assert (paper.margin, paper.min_nonce, paper.lexicon_tasks, paper.momentum_tasks, paper.judged) == (
        0.15,
        4,
        5,
        6,
        True,
    )
    assert (smoke.margin, smoke.min_nonce, smoke.lexicon_tasks, smoke.momentum_tasks, smoke.judged) == (
        0.05,
        2,
        2,
        1,  # one task since the smoke profile was cut to its budget (its rows are inconclusive)
        False,
    )
    assert (book.n_test, book.n_dev, book.k, book.pool, book.eval_seeds) == (500, 200, 16, 64, 3)
    assert book.demo_seeds == tuple(range(1, 8)) and len(book.lr_grid) == 36 and book.names == data.TASK_NAMES


# --- the readings that decide the ledger rows: known answers ------------------------------------


def _tiny_cfg(**kw):
    from iclbook.implicit import experiment as ex

    base = dict(
        n_test=12,
        n_dev=8,
        k=4,
        pool=16,
        demo_seeds=(1, 2, 3, 4),
        lr_grid=(0.01, 0.03, 0.1, 0.3),
        eval_seeds=1,
        kendall_examples=5,
        permutations=2,
        names=("sst2", "cb"),
    )
    return ex.Config(**{**base, **kw})


def test_task_mean_off_ceiling_and_gain_kept_on_hand_built_results():
    from iclbook.implicit import experiment as ex

    per = {"a": {"x": 1.0}, "b": {"x": float("nan")}, "c": {"x": 3.0}}
    assert ex.task_mean(per, ["a", "b", "c"], "x") == 2.0  # a NaN task has no say
    assert ex.task_mean(per, ["c"], "x") == 3.0
    short = {"a": {"acc": {"I": 0.7}}, "b": {"acc": {"I": 0.99}}, "c": {"acc": {"I": 0.3}}, "d": {"acc": {"I": 0.5}}}
    # a: off the ceiling; b: at it; c: within 10 points of its chance 0.25; d: chance 0.25, off
    assert ex.off_ceiling(short, ["a", "b", "c", "d"], [0.5, 0.5, 0.25, 0.25]) == ["a", "d"]
    assert ex.off_ceiling(short, ["d", "a"], [0.25, 0.5], above=0.3) == []
    with pytest.raises(ValueError, match="chance levels"):
        ex.off_ceiling(short, ["a", "b"], [0.5])
    # two classes: chance 0.5. Seed 1 keeps none of the gain, seed 2 half of it
    runs = [{"seen": 1.0, "unseen": 0.5}, {"seen": 1.0, "unseen": 0.75}]
    assert ex.gain_kept(runs, 2) == 0.25
    assert ex.gain_kept([{"seen": 0.75, "unseen": 0.125}], 4) == -0.25  # below chance
    with pytest.raises(ValueError):
        ex.gain_kept([], 2)


def test_momentum_effects_compare_each_eta_with_the_seed_spread():
    from iclbook.implicit import experiment as ex

    rows = [
        {"eta": 0.0, "ppl": 10.0, "icl": 0.5},
        {"eta": 0.0, "ppl": 12.0, "icl": 0.75},
        {"eta": 0.5, "ppl": 8.0, "icl": 0.75},
        {"eta": 0.5, "ppl": 9.0, "icl": 0.75},
        {"eta": 0.9, "ppl": 11.0, "icl": 1.0},
        {"eta": 0.9, "ppl": 11.0, "icl": 1.0},
    ]
    out = ex.momentum_effects(rows)
    assert out["base"]["ppl"].tolist() == [10.0, 12.0]
    assert out["spread"] == {"ppl": 2.0, "icl": 0.25}  # the largest range within one eta
    assert out["gain"] == {"ppl": {0.5: -2.5, 0.9: 0.0}, "icl": {0.5: 0.125, 0.9: 0.375}}
    # eta 0.5 lowers perplexity by more than the spread; eta 0.9 raises ICL accuracy by more than it
    assert out["beyond"] == {"ppl": [0.5], "icl": [0.9]}
    # a rise in perplexity is no improvement, however large
    worse = [dict(r, ppl=r["ppl"] + 10 * r["eta"]) for r in rows]
    assert ex.momentum_effects(worse)["beyond"]["ppl"] == []
    with pytest.raises(ValueError, match="eta = 0"):
        ex.momentum_effects([r for r in rows if r["eta"] > 0])


def test_momentum_study_reads_each_shipped_model(tmp_path):
    """Two tiny checkpoints written as retrain writes them: each row carries the record's eta and
    seed, the first step at which label accuracy with >= 9 examples reached 0.8 (NaN if never),
    and the perplexities, label accuracy and ICL accuracy recomputed here from the same model."""
    import dataclasses

    from iclbook import runtime
    from iclbook.implicit import experiment as ex
    from iclbook.implicit import retrain

    evals = {
        0.0: [{"step": 100, "acc_9_99": 0.5}, {"step": 200, "acc_9_99": 0.85}, {"step": 300, "acc_9_99": 0.9}],
        0.5: [{"step": 100, "acc_9_99": 0.2}, {"step": 200, "acc_9_99": 0.79}],
    }
    models = {}
    for eta, seed in ((0.5, 2), (0.0, 1)):
        with runtime.seeded(seed):
            m = TinyLM(LMConfig(layers=1, momentum=eta)).eval()
        history = {
            "model": dataclasses.asdict(m.cfg),
            "pretrain": dataclasses.asdict(pretrain.PretrainConfig(seed=seed)),
            "evals": evals[eta],
        }
        retrain.save(m, history, tmp_path / f"eta{eta}_seed{seed}")
        models[eta] = m
    held_out = data.pretraining_batch(3, 40, torch.Generator().manual_seed(1), p_plain=0.0)
    pools = {n: (data.make_dataset(n, 10, 0, split="train"), data.make_dataset(n, 6, 0)) for n in ("sst2", "cb")}
    rows = ex.momentum_study(tmp_path, held_out, pools, 2, lambda: torch.Generator().manual_seed(3), (10, 40))
    assert [(r["eta"], r["seed"]) for r in rows] == [(0.0, 1), (0.5, 2)]  # folder order
    assert rows[0]["cliff"] == 200 and math.isnan(rows[1]["cliff"])
    assert rows[0]["evals"] == evals[0.0]
    for r in rows:
        m = models[r["eta"]]
        with torch.no_grad():
            for L in (10, 40):
                ppl = float(torch.exp(pretrain.lm_loss(m, held_out[:, : L + 1])))
                assert r["ppl_at"][L] == pytest.approx(ppl, rel=1e-5)
        assert r["ppl"] == r["ppl_at"][40]
        assert r["few"] == pretrain.label_accuracy_by_context(m, held_out)["acc_1_3"]
        g = torch.Generator().manual_seed(3)  # one fresh draw per model
        icl = [
            probe.accuracy(probe.predict(m, test, probe.demonstrations(pool, 2, g)), test)
            for pool, test in pools.values()
        ]
        assert r["icl"] == pytest.approx(sum(icl) / 2, abs=1e-12)
    assert rows[0]["ppl"] != rows[1]["ppl"]  # two different models were read


def test_short_context_reads_the_protocol_with_k_demonstrations(monkeypatch):
    """short_context on a hand-built run of SST-5: which queries' classes the two demonstrations
    cover, and Rec2FTP against its two nulls, worked out by hand."""
    from iclbook.implicit import experiment as ex

    task = data.TASKS["sst5"]
    test = data.Dataset(task, [["dull"]] * 6, torch.tensor([0, 1, 2, 0, 3, 1]))
    demos = [(["fine"], task.labels[1]), (["flat"], task.labels[0])]  # cover classes 0 and 1
    masks = {"Z": [0, 0, 0, 0, 0, 1], "F": [1, 1, 1, 0, 1, 1], "I": [1, 1, 0, 1, 0, 1]}
    right = {k: torch.tensor(v, dtype=torch.bool) for k, v in masks.items()}
    seen = {}

    pred = {"Z": torch.tensor([1, 2, 3, 1, 0, 1]), "F": torch.tensor([0, 1, 2, 1, 3, 1])}  # F changes 4 of 6

    def fake_run_task(model, name, cfg, seed, **kw):
        seen.update(name=name, cfg=cfg, seed=seed, **kw)
        return ex.TaskRun(name, test, demos, 1, 0.1, float("nan"), {"I": 4 / 6}, right, pred=pred)

    def fake_flips(model, run, permutations, gen, n=200, max_len=256, masks=False):
        seen.update(permutations=permutations, n_order=n, masks=masks)
        flipped = {"ICL": [1] + [0] * 9, "SGD": [1, 1, 1] + [0] * 7, "GD": [0] * 10}
        return {k: torch.tensor(v, dtype=torch.bool) for k, v in flipped.items()}

    monkeypatch.setattr(ex, "run_task", fake_run_task)
    monkeypatch.setattr(ex, "order_flips", fake_flips)
    cfg = _tiny_cfg(permutations=3)
    out = ex.short_context(None, "sst5", cfg, 7, k=2, n_order=50)
    # the protocol: k demonstrations, three demonstration seeds, every other learning rate, no records
    assert seen["cfg"].k == 2 and seen["cfg"].demo_seeds == (1, 2, 3) and seen["cfg"].lr_grid == (0.01, 0.1)
    assert seen["record"] is False and seen["select_on_test"] is False and seen["seed"] == 7
    assert seen["permutations"] == 3 and seen["n_order"] == 50 and seen["masks"] is True
    assert out["k"] == 2 and out["flips"] == pytest.approx({"ICL": 0.1, "SGD": 0.3, "GD": 0.0})
    assert out["flip_masks"]["SGD"].sum() == 3 and out["lr"] == 0.1
    assert out["changed"] == pytest.approx(4 / 6)  # the predictions finetuning changed
    assert out["covered"] == pytest.approx(4 / 6)  # queries 0, 1, 3, 5 have a class the demos show
    assert out["n_fixed"] == 4  # Z wrong, F right: 0, 1, 2, 4
    assert out["rec2ftp"] == pytest.approx(50.0)  # of them ICL right: 0, 1
    assert out["null"] == pytest.approx(60.0)  # Z wrong: 0-4; ICL right: 0, 1, 3
    # strata: covered (fixed 0, 1; ICL right on every Z-wrong covered query) and not (fixed 2, 4;
    # ICL right on none): 1/2 * 100% + 1/2 * 0%
    assert out["matched_null"] == pytest.approx(50.0)


def _cue(words, cues):
    found = [w for w in words if w in cues]
    assert len(found) == 1, words
    return found[0]


def test_lookup_probe_splits_the_queries_by_whether_a_demonstration_shows_their_cue(monkeypatch):
    """A reader that is right exactly when a demonstration shows the query's cue word scores 1 on
    the seen queries and 0 on the unseen ones; a reader that is always right scores 1 on both."""
    from iclbook.implicit import experiment as ex

    cfg = _tiny_cfg(n_test=40, pool=16)
    counted = {"unseen": 0, "calls": 0}

    def lookup_reader(model, dset, demos=(), **kw):
        cues = {w for c in dset.cues for w in c}
        shown = {_cue(x, cues) for x, _ in demos}
        hit = torch.tensor([_cue(x, cues) in shown for x in dset.inputs])
        if demos:
            counted["unseen"] += int((~hit).sum())
            counted["calls"] += 1
        return torch.where(hit, dset.classes, (dset.classes + 1) % dset.task.n_classes)

    monkeypatch.setattr(probe, "predict", lookup_reader)
    out = ex.lookup_probe(None, "agnews", cfg, 0, cues_per_class=3, k=4, draws=3)
    assert counted["calls"] == 3 and out["n_unseen"] == counted["unseen"] > 0
    assert out["seen"] == 1.0 and out["unseen"] == 0.0 and out["zero_unseen"] == 0.0

    monkeypatch.setattr(probe, "predict", lambda model, dset, demos=(), **kw: dset.classes.clone())
    out = ex.lookup_probe(None, "agnews", cfg, 0, cues_per_class=3, k=4, draws=3)
    assert out["seen"] == out["unseen"] == out["zero_unseen"] == 1.0


def test_cue_moved_runs_the_protocol_with_the_cue_never_last(monkeypatch):
    """cue_moved hands run_task the three splits built with the cue word moved (one cue per input,
    never its last word; the same classes as the ordinary data) and the cheaper selection."""
    from iclbook.implicit import experiment as ex

    cfg = _tiny_cfg()
    captured = {}

    def fake_run_task(model, name, c, seed, **kw):
        captured.update(name=name, cfg=c, seed=seed, **kw)
        return "run"

    monkeypatch.setattr(ex, "run_task", fake_run_task)
    assert ex.cue_moved(None, "mr", cfg, 4) == "run"
    assert captured["cfg"] == ex.sparse_search(cfg, 4) and captured["cfg"].lr_grid == (0.01,)
    assert captured["record"] is False and captured["select_on_test"] is False and captured["seed"] == 4
    pool, dev, test = captured["data"]
    for dset, n, split in ((pool, cfg.pool, "train"), (dev, cfg.n_dev, "dev"), (test, cfg.n_test, "test")):
        assert len(dset) == n
        cues = {w for c in dset.cues for w in c}
        assert all(x[-1] not in cues and _cue(x, cues) for x in dset.inputs)
        assert torch.equal(dset.classes, data.make_dataset("mr", n, 4, split=split).classes)
    monkeypatch.undo()
    torch.manual_seed(0)
    run = ex.cue_moved(TinyLM(LMConfig(layers=1)).eval(), "mr", cfg, 4)  # the real protocol runs
    assert set(run.acc) >= {"Z", "I", "F", "nonce"} and run.lr == 0.01


# --- issue 31: like-with-like Kendall, the no-cue probe, label regimes, the k = 2 filter --------


def test_recorder_content_scores_drop_exactly_the_alibi_bias():
    """record keeps the scores with ALiBi's bias and their content part q.k/sqrt(d_h); the two
    differ by exactly -m_h (t - i). A model without a positional score bias takes the same path
    with a bias of 0: its content rows are its score rows (the same tensors)."""
    torch.manual_seed(0)
    prompts = [[1, 5, 7, 9, 4], [1, 6, 8]]
    alibi = TinyLM(LMConfig(layers=2)).eval()
    rec = probe.record(alibi, prompts)
    slopes = torch.stack([blk.self_attn.alibi for blk in alibi.layers])  # (layers, heads)
    for row, bare, p in zip(rec["scores"], rec["content"], prompts):
        gap = torch.arange(len(p) - 1, -1, -1, dtype=torch.float32)
        assert torch.allclose(row - bare, -slopes[:, :, None] * gap, atol=1e-5)
    plain = TinyLM(LMConfig(layers=2, positions="sinusoidal")).eval()
    rec = probe.record(plain, prompts)
    assert all(c is s for c, s in zip(rec["content"], rec["scores"]))
    with probe.Recorder(plain) as r:
        plain(torch.tensor([prompts[0]]))
    assert r.positional_bias(0, 4) is None
    assert torch.equal(r.scores(0, 0, 4), r.scores(0, 0, 4, positional=False))


def test_kendall_reads_content_scores_and_layer_one_queries_are_not_finetuned():
    """On a small ALiBi model: Kendall against the recency ramp is far higher on the biased scores
    than on their content part (ALiBi is a ramp), and at layer 1 tau(ICL, FT) equals tau(ICL, q_Z)
    exactly, because K/V finetuning cannot change the first layer's queries."""
    from iclbook.implicit import experiment as ex

    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=2)).eval()
    cfg = _tiny_cfg(n_test=6, kendall_examples=6, lr_grid=(0.3,), demo_seeds=(1,))
    run = ex.run_task(model, "sst2", cfg, seed=0, select_on_test=False)
    stats = ex.statistics(run, torch.Generator().manual_seed(0), 6, mismatch_draws=2)
    assert stats["kendall_layer1_q_gap"] == 0.0
    per = stats["per_example"]
    assert per["kendall_upper"].shape == (6, 1)
    assert torch.equal(per["kendall_minus_q_zero_upper"], (per["kendall"] - per["kendall_q_zero"])[:, 1:])
    assert stats["kendall_recency_with_bias"] > stats["kendall_recency"] + 0.2


def test_one_token_and_mapping_readers_on_hand_built_prompts():
    """The one-token lookup copies the label of the demonstrations ending in the query's last
    word (else guesses); the whole-input reader learns which nonce label names which class from
    the demonstrations' lexicon words."""
    from iclbook.implicit import experiment as ex

    task = data.TASKS["sst2"]
    neg, pos = (data.PRIOR["sst2"][c][0] for c in (0, 1))
    labels = ("dax", "wug")  # class 0 -> dax, class 1 -> wug
    demos = [([neg, neg, "the"], "dax"), ([pos, pos, "a"], "wug")] * 3
    test = data.Dataset(task, [[pos, pos, "the"], [neg, "x", "zz"]], torch.tensor([1, 0]))
    tok = ex.one_token_reader(demos, test, labels)
    assert tok.tolist() == [0.0, 0.5]  # "the" ends the class-0 demonstrations; "zz" none
    whole = ex.mapping_reader(demos, test, labels)
    assert whole.tolist() == [1.0, 1.0]
    # with the labels swapped in the demonstrations the reader follows them
    swapped = [(x, "wug" if y == "dax" else "dax") for x, y in demos]
    assert ex.mapping_reader(swapped, test, labels).tolist() == [0.0, 0.0]
    like = ex.lexicon_likelihood(task, [neg, "filler"])
    assert like.tolist() == pytest.approx([data.PRIOR_STRENGTH, 1 - data.PRIOR_STRENGTH])
    stripped = ex.without_cues(data.make_dataset("sst2", 5, 0))
    cues = {w for c in stripped.cues for w in c}
    assert stripped.cues and not any(w in cues for x in stripped.inputs for w in x)


def test_no_cue_probe_and_label_regimes_run_on_a_small_model(monkeypatch):
    from iclbook.implicit import experiment as ex

    torch.manual_seed(0)
    model = TinyLM(LMConfig(layers=1)).eval()
    cfg = _tiny_cfg(n_test=10, pool=16)
    out = ex.no_cue_probe(model, "sst5", cfg, 0, draws=2)
    assert {k: v.shape for k, v in out.items()} == {k: (20,) for k in ("icl", "one_token", "whole_input")}
    assert ((out["whole_input"] >= 0) & (out["whole_input"] <= 1)).all()
    reg = ex.label_regimes(model, "sst2", cfg, 0)
    assert set(reg["acc"]) == {"gold", "random", "flipped", "nonce", "zero"} and reg["n"] == 10
    # a model that copies the label of the closest demonstration: gold is the reader's own
    # score, flipped labels are followed
    seen = {}

    def copier(m, dset, demos=(), labels=None, **kw):
        seen.setdefault("labels", []).append(tuple(labels) if labels is not None else None)
        if not demos:
            return torch.zeros(len(dset), dtype=torch.long)
        labels = labels or dset.task.labels
        return torch.tensor([labels.index(demos[0][1])] * len(dset))

    monkeypatch.setattr(probe, "predict", copier)
    reg = ex.label_regimes(None, "sst2", cfg, 0)
    assert reg["acc"]["gold"] + reg["acc"]["flipped"] == pytest.approx(1.0)  # binary: flipped is the other
    assert reg["acc"]["nonce"] == reg["acc"]["gold"]
    with pytest.raises(ValueError, match="given for"):
        ex.label_regimes(None, "mr", cfg, 0, data=(data.make_dataset("sst2", 8, 0), data.make_dataset("sst2", 4, 0)))


def test_off_ceiling_runs_filter_runs_and_stop_screened_tasks(monkeypatch):
    """A run counts when ICL is off its ceiling and finetuning changed predictions; only those
    get the order check; a task whose screened seeds all fail runs no further; the pool sums the
    fixed examples of the passing runs."""
    from iclbook.implicit import experiment as ex

    acc = {"a": [0.7, 0.99, 0.7, 0.7], "b": [1.0, 1.0, 1.0, 1.0]}
    changed = {"a": [0.2, 0.2, 0.01, 0.3], "b": [0.5] * 4}
    calls = {"short": [], "order": 0}

    def fake_short(model, name, cfg, seed, k=2, n_order=200, *, data=None, codec=None, max_len=256, order=True):
        calls["short"].append((name, seed))
        j = seed
        return {
            "k": k, "acc": {"I": acc[name][j]}, "lr": 0.1, "n_fixed": 10, "n_fixed_right": 9, "rec2ftp": 90.0,
            "null": 50.0, "matched_null": 80.0, "covered": 1.0, "changed": changed[name][j], "seed": seed, "run": None,
        }  # fmt: skip

    def fake_order(model, result, permutations, n_order=200, max_len=256):
        calls["order"] += 1
        masks = {"ICL": torch.tensor([False, False]), "SGD": torch.tensor([True, False]), "GD": torch.zeros(2).bool()}
        out = {k: v for k, v in result.items() if k != "run"}
        return out | {"flips": {k: float(v.float().mean()) for k, v in masks.items()}, "flip_masks": masks}

    monkeypatch.setattr(ex, "short_context", fake_short)
    monkeypatch.setattr(ex, "add_order_flips", fake_order)
    out = ex.off_ceiling_runs(None, ["a", "b"], _tiny_cfg(), [0, 1, 2, 3], [0.5, 0.5], screen=2)
    assert out["a"]["runs"] == 4 and len(out["a"]["passed"]) == 2  # seed 1 at the ceiling, 2 a no-op
    assert out["b"]["runs"] == 2 and out["b"]["passed"] == []  # screened out after two seeds
    assert calls["order"] == 2
    pooled = ex.pool_off_ceiling(out)
    assert (pooled["runs"], pooled["passed"], pooled["n_fixed"]) == (6, 2, 20)
    assert pooled["rec2ftp"] == pytest.approx(90.0) and pooled["matched_null"] == pytest.approx(80.0)
    assert pooled["tasks"] == ["a"] and pooled["order"]["a"]["SGD"] == 0.5 and pooled["order"]["a"]["runs"] == 2
    with pytest.raises(ValueError, match="chance"):
        ex.off_ceiling_runs(None, ["a"], _tiny_cfg(), [0], [0.5, 0.5])
