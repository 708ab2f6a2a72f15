"""Unit tests of chapter 5's lenses (lib/iclbook/lenses.py) and the library forms they added."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from iclbook import induction as ih
from iclbook import lenses
from iclbook.implicit import dual_form

SMALL = replace(ih.CONFIGS["book"], K=64, L=8, N=4, D=15, Nmax=8, K_c=16, n_eval=64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def float32(setup) -> tuple:
    """The float64 test model and sequences as the chapter holds them, in float32."""
    model, ic = setup
    m32 = copy.deepcopy(model).float()
    ic32 = ic.map(lambda t: t)
    ic32.tokens = ic.tokens.float()
    return m32, ic32


@pytest.fixture(scope="module")
def setup():
    task = ih.make_task(SMALL, gen(0))
    sets = ih.eval_sets(task, SMALL, gen(1))
    model = ih.InductionNet(SMALL, gen(2)).double()
    ic = sets["IC"]
    ic = ic.map(lambda t: t)
    ic.tokens = ic.tokens.double()
    return model, ic


def test_layer2_pieces_are_the_networks(setup):
    model, ic = setup
    part = lenses.layer2(model, ic.tokens)
    assert torch.allclose(model.mlp(part.a_full), model(ic.tokens), atol=1e-12)
    q = part.h[:, -1]
    assert torch.allclose(part.a_red, q + q @ model.v2.T, atol=1e-12)  # attention 1 on itself
    alone = model(ic.tokens[:, -1:])
    assert torch.allclose(model.mlp(part.a_alone), alone, atol=1e-12)
    with pytest.raises(TypeError, match="InductionNet"):
        lenses.layer2(ih.MinimalNet(SMALL, gen(0)), ic.tokens)


def test_contextual_patch_identity_and_ranges(setup):
    model, ic = setup
    out = lenses.contextual_patch(model, ic, n_patch=32)
    assert out["identity_gap"] < 1e-12
    assert out["patch_norm"] > 0
    # selectivity recomputed here: cosine of the patch's hidden shift W1 dA with each label token's
    # W1 V2 h_j, matching class minus the others
    part = lenses.layer2(model, ic.tokens[:32])
    shift = (part.a_full - part.a_red) @ model.mlp.w1.T
    label = (part.h[:, 1:-1:2] @ model.v2.T) @ model.mlp.w1.T
    cos = torch.nn.functional.cosine_similarity(shift[:, None], label, dim=-1)
    match = ic.classes[:32] == ic.query_class[:32, None]
    want = torch.stack([cos[i][match[i]].mean() - cos[i][~match[i]].mean() for i in range(32)]).mean()
    assert out["selectivity"] == pytest.approx(float(want.detach()), abs=1e-9)
    assert out["selectivity_each"].shape == (32,)
    assert out["selectivity_each"].mean() == pytest.approx(out["selectivity"], abs=1e-12)
    assert out["full"] == pytest.approx(float((model(ic.tokens[:32]).argmax(-1) == ic.target[:32]).double().mean()))
    # the null toward another class's label token: the pair after the first matching one, against
    # the remaining non-matching ones
    first = match.double().argmax(1)
    wrong_idx = (first + 1) % SMALL.N
    kept, vals = [], []
    for i in range(32):
        if match[i, wrong_idx[i]]:
            continue
        rest = ~match[i]
        rest[wrong_idx[i]] = False
        kept.append(i)
        vals.append(cos[i, wrong_idx[i]] - cos[i][rest].mean())
    assert out["selectivity_wrong_each"].shape == (len(kept),)
    assert out["selectivity_wrong"] == pytest.approx(float(torch.stack(vals).mean().detach()), abs=1e-9)
    # the null of the patch alone: sequence i's query alone, patched with sequence i-1's patch
    from iclbook.contextual.patches import rank_one_update

    dW = rank_one_update(model.mlp.w1, part.a_full, part.a_red)
    mism = torch.stack([model.mlp(part.a_alone[i : i + 1], w1=model.mlp.w1 + dW[i - 1])[0] for i in range(32)])
    want_acc = float((mism.argmax(-1) == ic.target[:32]).double().mean())
    assert out["mismatched_alone"] == pytest.approx(want_acc)


def test_repeat_query_puts_a_context_item_in_the_query_slot(setup):
    _, ic = setup
    tokens, target = lenses.repeat_query(ic, offset=1)
    N, P = SMALL.N, SMALL.P
    match = (ic.classes == ic.query_class[:, None]).float().argmax(1)
    other = (match + 1) % N
    rows = torch.arange(len(ic))
    assert torch.equal(tokens[:, -1, P:], ic.tokens[rows, 2 * other, P:])
    assert torch.equal(tokens[:, -1, :P].argmax(-1), ic.shift + 2 * N)  # the query's position slot
    assert torch.equal(tokens[:, -1, :P].sum(-1), torch.ones(len(ic), dtype=tokens.dtype))
    assert torch.equal(tokens[:, :-1], ic.tokens[:, :-1])
    assert torch.equal(target, ic.context_labels[rows, other])


def test_dual_form_identity_and_the_finetuning_step_by_autograd(setup):
    model, ic = setup
    lr = 1e-3
    out = lenses.dual_form_update(model, ic, n=8, lr=lr)
    assert out["identity_gap"] < 1e-12
    # brute force for sequence 0: one SGD step on V2 from its context pairs, each item alone
    m = copy.deepcopy(model)
    N = SMALL.N
    items = ic.tokens[0, 0 : 2 * N : 2].unsqueeze(1)  # (N, 1, d)
    loss = torch.nn.functional.cross_entropy(m(items), ic.context_labels[0], reduction="sum")
    (gv2,) = torch.autograd.grad(loss, m.v2)
    part = lenses.layer2(model, ic.tokens[:1])
    hq = part.h[0, -1]
    ft_shift = -lr * gv2 @ hq
    from iclbook.implicit import metrics

    expected = metrics.simaou(part.a_full, part.a_red, part.a_red + ft_shift)
    one = lenses.dual_form_update(model, ic.map(lambda t: t[:1]), n=1, lr=lr, shuffle_generator=gen(7))
    assert one["simaou"] == pytest.approx(float(expected[0]), abs=1e-10)
    # the null: the same step with the context's labels permuted by the shuffle generator's draw
    perm = torch.argsort(torch.rand((1, N), generator=gen(7)), dim=1)[0]
    m = copy.deepcopy(model)
    loss = torch.nn.functional.cross_entropy(m(items), ic.context_labels[0][perm], reduction="sum")
    (gv2,) = torch.autograd.grad(loss, m.v2)
    shuffled = metrics.simaou(part.a_full, part.a_red, part.a_red - lr * gv2 @ hq)
    assert one["simaou_shuffled"] == pytest.approx(float(shuffled[0]), abs=1e-10)
    again = lenses.dual_form_update(model, ic, n=8, lr=lr)
    assert again["simaou_each"].shape == again["simaou_shuffled_each"].shape == (8,)
    assert again["simaou_each"].mean() == pytest.approx(again["simaou"], abs=1e-12)


def test_same_class_attention_is_uniform_share_when_layer_two_is_blind(setup):
    model, ic = setup
    blind = copy.deepcopy(model)
    with torch.no_grad():
        blind.q2.zero_()  # every layer-2 logit 0
    share = lenses.same_class_attention(blind, ic)
    n_match = (ic.classes == ic.query_class[:, None]).sum(1).double()
    assert share == pytest.approx(float((2 * n_match / SMALL.T).mean()), abs=1e-12)


def test_pruning_curve_ends(setup):
    model, ic = setup
    acc = lenses.pruning_curve(model, ic, [0.0, 1.0])
    assert acc[0] == pytest.approx(float((model(ic.tokens).argmax(-1) == ic.target).double().mean()))
    z = model.query_state(ic.tokens)
    silent = model.mlp(z, mask1=torch.zeros(model.mlp.w1.shape[0], dtype=z.dtype))
    assert torch.allclose(silent, silent[:1].expand_as(silent))  # the output no longer depends on the input
    assert acc[1] == pytest.approx(float((silent.argmax(-1) == ic.target).double().mean()))
    with pytest.raises(ValueError, match="generator"):
        lenses.pruning_curve(model, ic, [0.5], how="random")


def test_random_pruning_is_one_random_mask_per_generator(setup):
    model, ic = setup
    accs = lenses.random_pruning(model, ic, 0.5, [gen(10), gen(11), gen(12)])
    assert accs.shape == (3,)
    for a, g in zip(accs, (gen(10), gen(11), gen(12))):
        assert a == pytest.approx(lenses.pruning_curve(model, ic, [0.5], how="random", generator=g)[0], abs=1e-12)
    with pytest.raises(ValueError, match="generator"):
        lenses.random_pruning(model, ic, 0.5, [])


def test_classifier_takes_a_weight_per_input_and_a_mask(setup):
    model, ic = setup
    z = model.query_state(ic.tokens[:6])
    mlp = model.mlp
    batched = mlp.w1.expand(6, *mlp.w1.shape)
    assert torch.allclose(mlp(z, w1=batched), mlp(z), atol=1e-12)
    keep = torch.ones(mlp.w1.shape[0], dtype=z.dtype)
    keep[:10] = 0
    pruned_rows = mlp.w1.clone()
    h = torch.relu(z @ pruned_rows.T + mlp.b1) * keep
    assert torch.allclose(mlp.hidden(z, mask1=keep)[0], h)


def test_relaxed_icl_batched_equals_one_prompt_at_a_time():
    g = gen(5)
    d, n_demo, n = 6, 4, 2
    w_k, w_v = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    xd, x = (
        torch.randn(3, d, n_demo, generator=g, dtype=torch.float64),
        torch.randn(3, d, n, generator=g, dtype=torch.float64),
    )
    q = torch.randn(3, d, generator=g, dtype=torch.float64)
    batched = dual_form.relaxed_icl(w_k, w_v, xd, x, q)
    for b in range(3):
        one = dual_form.relaxed_icl(w_k, w_v, xd[b], x[b], q[b])
        for key in ("attention", "zsl", "update", "W_ZSL", "dW_ICL"):
            assert torch.allclose(batched[key][b], one[key], atol=1e-12)
    with pytest.raises(ValueError, match="batch"):
        dual_form.zsl_weight(w_k, w_v, torch.zeros(d))


def test_train_runs_keeps_weights_per_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_CACHE", str(tmp_path))
    runs = ih.train_runs(SMALL, [0, 1], steps=4, eval_every=2, batch=8, keep_weights=True, cache_name="kw")
    r = runs[1]
    assert len(r.weights) == len(r.history) == 3
    init = ih.InductionNet(SMALL, torch.Generator().manual_seed(1))
    assert all(torch.equal(r.at(0).state_dict()[k], v) for k, v in init.state_dict().items())
    assert all(torch.equal(r.weights[-1][k], v) for k, v in r.model.state_dict().items())
    assert not torch.equal(r.weights[1]["q1"], r.weights[0]["q1"])
    again = ih.train_runs(SMALL, [0, 1], steps=4, eval_every=2, batch=8, keep_weights=True, cache_name="kw")
    assert all(torch.equal(a[k], b[k]) for a, b in zip(again[1].weights, r.weights) for k in a)
    plain = ih.train_runs(SMALL, [0, 1], steps=4, eval_every=2, batch=8)
    assert plain[1].weights is None
    with pytest.raises(ValueError, match="keep_weights"):
        plain[1].at(0)


# --- reading a run: the helpers that decide chapter 5's rows --------------------------------------


def test_read_checkpoint_gathers_every_lens_on_the_same_model(setup):
    model, ic = setup
    m32, ic32 = float32(setup)

    def read():
        return lenses.read_checkpoint(
            m32,
            ic32,
            ic,
            [0.0, 0.5],
            dual_generator=gen(3),
            shuffle_generator=gen(5),
            prune_generators=[gen(4), gen(6)],
            null_rate=0.3,
        )

    row = read()
    assert row["patch_identity_gap"] < 1e-12 and row["dual_identity_gap"] < 1e-12
    assert row["same_class"] == pytest.approx(lenses.same_class_attention(m32, ic32))
    assert row["prune_magnitude"] == lenses.pruning_curve(m32, ic32, [0.0, 0.5])
    assert list(row["prune_random_draws"]) == list(lenses.random_pruning(m32, ic32, 0.3, [gen(4), gen(6)]))
    again = read()
    assert again.keys() == row.keys()
    for key, v in row.items():  # the same generators, the same numbers
        assert (v == again[key]).all() if hasattr(v, "shape") else v == again[key], key


def test_pruning_drop_reads_the_curve_at_a_rate():
    row = {"prune_magnitude": [0.9, 0.85, 0.5], "prune_random": [0.9, 0.6, 0.2]}
    assert lenses.pruning_drop(row, [0.0, 0.3, 0.6], 0.3) == pytest.approx(0.05)
    assert lenses.pruning_drop(row, [0.0, 0.3, 0.6], 0.6, "random") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="start at rate 0"):
        lenses.pruning_drop(row, [0.1, 0.3, 0.6], 0.3)
    with pytest.raises(ValueError):
        lenses.pruning_drop(row, [0.0, 0.3, 0.6], 0.4)  # not a rate of the curve


def test_random_drops_are_the_unpruned_accuracy_minus_each_mask():
    row = {"prune_magnitude": [0.9, 0.85], "prune_random_draws": [0.8, 0.9, 0.7]}
    assert lenses.random_drops(row, [0.0, 0.3]) == pytest.approx([0.1, 0.0, 0.2])
    with pytest.raises(ValueError, match="start at rate 0"):
        lenses.random_drops(row, [0.1, 0.3])


def test_change_across_pairs_the_sequences_and_states_the_rival():
    steps = [0, 100, 200, 400]
    means = [0.0, 0.1, 0.2, 0.8]
    before, after = [0.1, 0.3, 0.2, 0.2], [0.9, 0.7, 0.8, 0.8]
    c = lenses.change_across(steps, means, before, after, untrained=0, plateau=2, end=3)
    d = torch.tensor(after, dtype=torch.float64) - torch.tensor(before, dtype=torch.float64)
    se = float(d.std() / 2)
    assert c["change"] == pytest.approx(0.6)
    assert c["interval"] == pytest.approx((0.6 - 1.96 * se, 0.6 + 1.96 * se))
    assert c["before"] == pytest.approx(0.2)  # untrained -> plateau
    with pytest.raises(ValueError):
        lenses.change_across(steps, means, [0.1], [0.2], untrained=0, plateau=2, end=3)
    with pytest.raises(ValueError):
        lenses.change_across(steps[:-1], means, before, after, untrained=0, plateau=2, end=3)


def test_plateau_checkpoint_is_the_middle_of_the_flat_stretch_before_the_onset():
    steps = [0, 50, 100, 150, 200, 250, 300]
    ic = [0.20, 0.13, 0.12, 0.14, 0.40, 0.90, 0.99]  # B/N = 0.125; onset at 180
    assert lenses.plateau_checkpoint(steps, ic, 180, 0.125) == 2  # of 1, 2, 3 (0.20 is off the band)
    assert lenses.plateau_checkpoint(steps, ic, 120, 0.125) == 2  # of 1, 2
    assert lenses.plateau_checkpoint(steps, [0.9] * 7, 180, 0.125) == 3  # no plateau: the middle
    with pytest.raises(ValueError):
        lenses.plateau_checkpoint(steps, ic[:-1], 180, 0.125)


def test_half_change_finds_the_step_halfway_from_the_start_to_the_end():
    x = [0, 10, 20, 30, 40]
    assert lenses.half_change(x, [0.0, 0.1, 0.3, 0.6, 1.0], 0) == 30  # 0.6 is the first >= 0.5
    assert lenses.half_change(x, [1.0, 0.9, 0.2, 0.1, 0.0], 1) == 20  # a fall counts the same way
    assert lenses.half_change(x, [0.5] * 5, 0) != lenses.half_change(x, [0.5] * 5, 0)  # no change: NaN


def test_the_two_layer_patch_rebuilds_the_network_and_the_correctness_vectors_match(setup):
    model, ic = setup
    out = lenses.contextual_patch(model, ic, n_patch=32)
    assert out["two_layer_gap"] < 1e-12  # both attention layers as the contextual layer: exact
    assert out["two_layer_alone"] == out["full"]
    for key in ("full", "alone", "patched_alone", "mismatched_alone"):
        each = out[f"{key}_each"]
        assert each.shape == (32,) and set(each.tolist()) <= {0.0, 1.0}
        assert each.mean() == pytest.approx(out[key], abs=1e-12)


def test_gap_share_is_the_share_of_the_gap_with_a_paired_bootstrap():
    full = np.array([1.0] * 80 + [0.0] * 20)
    alone = np.array([0.0] * 100)
    part = np.array([1.0] * 40 + [0.0] * 60)
    out = lenses.gap_share(full, alone, part, gen(0), draws=500)
    assert out["share"] == pytest.approx(0.5) and out["gap"] == pytest.approx(0.8)
    lo, hi = out["interval"]
    assert lo < 0.5 < hi and hi - lo < 0.3
    again = lenses.gap_share(full, alone, part, gen(0), draws=500)
    assert again == out  # the generator's draws, nothing else
    tiny = lenses.gap_share(alone + 0.0, alone, alone, gen(0), draws=50)  # no gap: nothing to share
    assert np.isnan(tiny["share"]) and all(np.isnan(tiny["interval"]))
    with pytest.raises(ValueError, match="one length"):
        lenses.gap_share(full, alone[:5], part, gen(0))


def test_layer_shares_reads_every_sequence_in_chunks_with_the_same_resamples_for_the_null(setup):
    model, ic = setup
    m32, ic32 = float32(setup)
    out = lenses.layer_shares(m32, ic32, gen(3), chunk=24)
    assert out["n"] == len(ic) and out["two_layer_gap"] < 1e-12
    whole = lenses.contextual_patch(model, ic, n_patch=len(ic))
    # chunks change only which sequence lends its patch to the null (the next one of its chunk)
    want = lenses.gap_share(whole["full_each"], whole["alone_each"], whole["patched_alone_each"], gen(3))
    assert out["layer2"]["share"] == want["share"] or (np.isnan(want["share"]) and np.isnan(out["layer2"]["share"]))


def test_the_answer_steps_of_simaou_by_autograd(setup):
    model, ic = setup
    lr = 1e-3
    one = lenses.dual_form_update(model, ic.map(lambda t: t[:1]), n=1, lr=lr, shuffle_generator=gen(7))
    part = lenses.layer2(model, ic.tokens[:1])
    hq = part.h[0, -1]
    from iclbook.implicit import metrics

    for key, label in (("own", ic.target[:1]), ("wrong", (ic.target[:1] + 1) % SMALL.L)):
        # one SGD step on V2 from the query's own layer-2 input (its stream after layer 1, with its
        # context), shown alone so that layer 2's output is hq + V2 hq, toward ``label``
        v2 = model.v2.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.mlp((hq + v2 @ hq)[None]), label, reduction="sum")
        (gv2,) = torch.autograd.grad(loss, v2)
        expected = metrics.simaou(part.a_full, part.a_red, part.a_red - lr * gv2 @ hq)
        assert one[f"simaou_{key}"] == pytest.approx(float(expected[0]), abs=1e-10)
    # Dai et al.'s reference: the query with no demonstration in either layer
    items = ic.tokens[0, 0 : 2 * SMALL.N : 2].unsqueeze(1)
    m = copy.deepcopy(model)
    loss = torch.nn.functional.cross_entropy(m(items), ic.context_labels[0], reduction="sum")
    (gv2,) = torch.autograd.grad(loss, m.v2)
    h_alone = model.layer1(ic.tokens[:1, -1:])[0][0, -1]
    nodemo = metrics.simaou(part.a_full, part.a_alone, part.a_alone - lr * gv2 @ h_alone)
    assert one["simaou_nodemo"] == pytest.approx(float(nodemo[0].detach()), abs=1e-10)


def test_read_checkpoint_has_the_largest_first_curve_and_the_explorer_snapshots(setup):
    model, ic = setup
    m32, ic32 = float32(setup)
    row = lenses.read_checkpoint(
        m32,
        ic32,
        ic,
        [0.0, 0.5],
        dual_generator=gen(3),
        shuffle_generator=gen(5),
        prune_generators=[gen(4)],
        null_rate=0.3,
        n_show=5,
    )
    assert row["prune_largest"] == lenses.pruning_curve(m32, ic32, [0.0, 0.5], "largest")
    T = ic.tokens.shape[1]
    assert row["att1_example"].shape == (T, T) and row["att2_examples"].shape == (5, T)
    assert np.allclose(row["att2_examples"].sum(1), 1)


def test_the_explorer_draws_every_checkpoint_in_one_layout(setup):
    import matplotlib

    matplotlib.use("Agg")
    from iclbook import plots

    model, ic = setup
    m32, ic32 = float32(setup)
    rows = []
    for step in (0, 10):
        r = {"step": step, "IC": 0.1, "ILA1": 0.2, "TILA2": 0.3, "CLA": 0.4}
        r.update(
            lenses.read_checkpoint(
                m32,
                ic32,
                ic,
                [0.0, 0.3],
                dual_generator=gen(3),
                shuffle_generator=gen(5),
                prune_generators=[gen(4)],
                null_rate=0.3,
                n_show=4,
            )
        )
        rows.append(r)
    keys = [k for _, lines in lenses.EXPLORER_CURVES for k, _, _ in lines]
    series = {k: [r.get(k, 0.0) for r in rows] for k in ["step", *keys]}
    own = (ic.classes[:4] == ic.query_class[:4, None]).repeat_interleave(2, dim=1).numpy()
    fig, draw = lenses.explorer(series, rows, base=0.25, uniform=0.2, same_class_tokens=own, band=(2.0, 8.0))
    positions = [ax.get_position().bounds for ax in fig.axes[:8]]
    out = plots.scrubber(fig, draw, ["step 0", "step 10"], start=1, html_output=True, alt="explorer")
    assert len(out.frames) == 2 and out.frames[0] != out.frames[1]
    assert [ax.get_position().bounds for ax in fig.axes[:8]] == positions  # frames do not jitter
    with pytest.raises(ValueError, match="one snapshot per checkpoint"):
        lenses.explorer(series, rows[:1], base=0.25, uniform=0.2, same_class_tokens=own)
