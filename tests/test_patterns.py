"""Unit tests of iclbook.patterns (Li et al. 2024): generator statistics, the task split, the
model's shapes and observables, the hinge loss, pruning masks and bad inputs."""

import math

import numpy as np
import pytest
import torch

from iclbook import internals, runtime
from iclbook import patterns as pt

CFG = pt.CONFIGS["smoke"]


def gen(seed=0):
    return runtime.generator(seed)


def big_batch(alpha=0.8, l=20, n=20000, domain=None, seed=0):
    domain = domain or pt.in_domain(CFG, "train")
    return pt.sample_prompts(domain, n, alpha=alpha, l=l, cfg=CFG, generator=gen(seed))


def test_patterns_are_orthogonal_with_the_right_norms():
    dom = pt.in_domain(CFG, "all")
    allp = torch.cat([dom.relevant, dom.irrelevant])
    gram = allp @ allp.T
    assert torch.allclose(gram - torch.diag(torch.diag(gram)), torch.zeros_like(gram))
    assert torch.allclose(dom.relevant.norm(dim=1), torch.full((CFG.M1,), CFG.beta))
    assert torch.allclose(dom.irrelevant.norm(dim=1), torch.ones(CFG.M2))


def test_task_split_covers_every_pattern_both_ways():
    train_t, test_t = pt.in_domain(CFG, "train").tasks, pt.in_domain(CFG, "test").tasks
    assert len(train_t) + len(test_t) == CFG.M1 * (CFG.M1 - 1)
    assert not {tuple(t) for t in train_t.tolist()} & {tuple(t) for t in test_t.tolist()}
    assert set(train_t[:, 0].tolist()) == set(train_t[:, 1].tolist()) == set(range(CFG.M1))
    # the theorem's condition |T_tr| / |T| >= (M1 - 1)^(-1/2)
    assert len(train_t) / (CFG.M1 * (CFG.M1 - 1)) >= (CFG.M1 - 1) ** -0.5


def test_prompt_shapes_and_query():
    p = big_batch(n=7, l=5)
    assert p.tokens.shape == (7, 6, CFG.d) and p.target.shape == (7,) and p.same.shape == (7, 5)
    assert torch.all(p.tokens[:, -1, CFG.d_X :] == 0), "the query carries no label"
    assert set(p.target.tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("alpha", [0.4, 0.8, 1.0])
def test_alpha_fraction_and_label_balance(alpha):
    p = big_batch(alpha=alpha)
    # a context shares the query's pattern with probability alpha/2 + (1-alpha)*0 (other patterns
    # exclude the task's two)
    assert abs(float(p.same.float().mean()) - alpha / 2) < 0.01
    assert abs(float(p.target.mean())) < 0.02, "query labels are balanced"
    assert abs(float(p.labels.float().mean())) < 0.02, "context labels are balanced"
    # contexts sharing the query's pattern carry the query's label
    agree = (p.labels == p.target[:, None].long())[p.same]
    assert bool(agree.all())


def test_labels_follow_the_task_and_the_embedding():
    p = big_batch(n=500, l=10)
    label_part = p.tokens[:, :-1, CFG.d_X :]
    assert torch.allclose(label_part[..., 0], p.labels.float())
    assert torch.all(label_part[..., 1:] == 0)
    # inputs are mu_j + kappa nu_k with |kappa| <= K: the relevant part has norm beta exactly
    x = p.tokens[:, :-1, : CFG.M1]
    assert torch.allclose(x.norm(dim=-1), torch.full(x.shape[:2], CFG.beta))
    noise = p.tokens[:, :-1, CFG.M1 : CFG.d_X].norm(dim=-1)
    assert float(noise.max()) <= CFG.kappa + 1e-6


def test_ood_patterns_have_coefficient_sum_S1():  # the default (pair) construction
    dom = pt.out_of_domain(CFG, 1.3, gen(1))
    base = pt.in_domain(CFG, "all").relevant
    coef = dom.relevant @ base.T / CFG.beta**2  # coefficients on the IDR patterns
    assert torch.allclose(coef.sum(1), torch.full((CFG.n_ood_relevant,), 1.3))
    assert torch.allclose(dom.irrelevant.norm(dim=1), torch.ones(CFG.n_ood_irrelevant))
    assert torch.allclose(dom.irrelevant[:, : CFG.M1], torch.zeros(CFG.n_ood_irrelevant, CFG.M1))
    assert len(dom.tasks) == CFG.n_ood_relevant * (CFG.n_ood_relevant - 1)


def test_bad_inputs():
    dom = pt.in_domain(CFG, "train")
    with pytest.raises(ValueError, match="alpha"):
        pt.sample_prompts(dom, 3, alpha=1.2, l=5, cfg=CFG, generator=gen())
    with pytest.raises(ValueError, match="alpha"):
        pt.sample_prompts(dom, 3, alpha=-0.1, l=5, cfg=CFG, generator=gen())
    with pytest.raises(ValueError, match="S1"):
        pt.out_of_domain(CFG, 0.0, gen())
    with pytest.raises(ValueError, match="M1"):
        pt.in_domain(pt.Config(M1=2), "all")
    with pytest.raises(ValueError, match="split"):
        pt.in_domain(CFG, "validation")
    with pytest.raises(ValueError):
        pt.sample_prompts(dom, 0, alpha=0.5, l=5, cfg=CFG, generator=gen())


def test_model_shapes_and_observables():
    model = pt.OneLayerICL(CFG, seed=0)
    p = big_batch(n=9, l=6)
    assert model(p.tokens).shape == (9,)
    att = model.attention(p.tokens)
    assert att.shape == (9, 6) and torch.allclose(att.sum(-1), torch.ones(9))
    hidden = internals.read(model, p.tokens, "hidden")
    assert hidden.shape == (9, CFG.m)
    assert model.neuron_rows().shape == (CFG.m, CFG.d)
    assert float(model.a.sum()) == 0.0 and torch.allclose(model.a.abs(), torch.full((CFG.m,), 1 / CFG.m))
    # the output is exactly a^T relu(hidden)
    assert torch.allclose(model(p.tokens), torch.relu(hidden) @ model.a)


def test_hinge_loss():
    class Const(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, tokens):
            return torch.full((tokens.shape[0],), self.value)

    tokens, z = torch.zeros(4, 2, 3), torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert float(pt.hinge(Const(0.0), (tokens, z))) == 1.0
    assert float(pt.hinge(Const(2.0), (tokens, z))) == pytest.approx((0 + 3 + 0 + 3) / 4)
    assert float(pt.hinge(Const(0.5), (tokens, z))) == pytest.approx((0.5 + 1.5 + 0.5 + 1.5) / 4)


def test_pruning_masks():
    norms = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.7])
    assert pt.pruning_mask(norms, 0.4, "magnitude").tolist() == [0, 1, 0, 1, 1]
    assert pt.pruning_mask(norms, 0.4, "largest").tolist() == [1, 0, 1, 0, 1]
    r = pt.pruning_mask(norms, 0.4, "random", gen())
    assert int(r.sum()) == 3
    assert pt.pruning_mask(norms, 0.0, "magnitude").tolist() == [1] * 5
    with pytest.raises(ValueError):
        pt.pruning_mask(norms, 1.5, "magnitude")
    with pytest.raises(ValueError):
        pt.pruning_mask(norms, 0.2, "smallest")
    with pytest.raises(ValueError):
        pt.pruning_mask(norms, 0.2, "random")
    k, ratio = pt.norm_split(torch.tensor([0.2, 0.25, 0.9, 1.0, 0.22, 0.95]))
    assert k == 3 and ratio == pytest.approx(0.95 / 0.22)
    k, ratio = pt.norm_split(torch.linspace(1.0, 1.1, 20))
    assert ratio < 1.1  # one group: the split finds no real gap


def test_short_training_lowers_the_hinge_loss():
    # at the book's initialisation 60 steps sit on the plateau (loss 1 to five digits, up or down
    # by chance); larger attention weights at initialisation leave it within them
    cfg = pt.Config(steps=60, checkpoint_every=30, init_attn=1.0)
    models, hist = pt.train_models(cfg, [0, 1], steps=60, on_checkpoint=lambda step, ms: {"n": len(ms)})
    assert len(models) == 2 and [c["step"] for c in hist["checkpoints"]] == [0, 30, 60]
    first, last = hist["loss"][0], hist["loss"][-1]
    assert all(b < a / 2 for a, b in zip(first, last))


def test_classical_baselines_on_easy_prompts():
    """With alpha = 1 and long contexts the query's pattern is always present: 1-NN is exact."""
    p = big_batch(alpha=1.0, l=20, n=30, seed=3)
    errors = pt.classical_errors(p, CFG)
    assert set(errors) == {"logistic regression", "1-NN", "3-NN", "SVM (RBF)", "SVM (linear)"}
    assert errors["1-NN"] == 0.0
    assert all(0.0 <= e <= 1.0 for e in errors.values())


def test_small_gpt_shapes():
    model = pt.SmallGPT(CFG, seed=0, layers=1, heads=2, width=16)
    p = big_batch(n=5, l=7)
    assert model(p.tokens).shape == (5,)
    # causal: the query sees every context, so changing a context changes the output
    changed = p.tokens.clone()
    changed[:, 0, -CFG.d_Y] *= -1
    assert not torch.allclose(model(p.tokens), model(changed))


def test_progress_measures_are_json_ready():
    import json

    model = pt.OneLayerICL(CFG, seed=0)
    dom = pt.out_of_domain(CFG, 1.1, gen(1))
    id_val = big_batch(n=50, domain=pt.in_domain(CFG, "test"))
    ood_val = pt.sample_prompts(dom, 50, alpha=0.8, l=20, cfg=CFG, generator=gen(2))
    m = pt.progress_measures(model, CFG, id_val, ood_val, dom)
    json.dumps(m)
    assert abs(m["q_gain_pattern"] - CFG.init_attn) < 1e-6 and abs(m["q_gain_noise"] - CFG.init_attn) < 1e-6
    assert len(m["label_angle"]) == CFG.m


def test_training_splits():
    import collections

    balanced = pt.training_tasks(6)
    assert len(balanced) == 18  # shifts 1, 2, 3 for every pattern
    for column in (0, 1):  # every pattern 3x positive, 3x negative
        assert set(collections.Counter(balanced[:, column].tolist()).values()) == {3}
    for M in range(4, 13):  # the balanced split meets the share for any M
        assert len(pt.training_tasks(M)) / (M * (M - 1)) >= (M - 1) ** -0.5
    uneven = pt.training_tasks(6, "uneven")
    assert len(uneven) == 15 and collections.Counter(uneven[:, 0].tolist())[0] == 3
    assert collections.Counter(uneven[:, 0].tolist())[5] == 2
    with pytest.raises(ValueError, match="below the theorems"):
        pt.training_tasks(8, "uneven")
    with pytest.raises(ValueError, match="kind"):
        pt.training_tasks(6, "random")
    cfg = pt.Config(train_split="uneven")
    assert len(pt.in_domain(cfg, "train").tasks) == 15 and len(pt.in_domain(cfg, "test").tasks) == 15


@pytest.mark.parametrize("construction", pt.CONSTRUCTIONS)
def test_ood_constructions_keep_S1_and_set_the_norm(construction):
    base = pt.in_domain(CFG, "all").relevant
    expected_norm = {"pair": 0.9 / math.sqrt(2), "single": 0.9, "unit": 1.0, "mixed": math.hypot(1.9, 1.0)}[
        construction
    ]
    dom = pt.out_of_domain(CFG, 0.9, gen(1), construction)
    coef = dom.relevant @ base.T / CFG.beta**2
    assert torch.allclose(coef.sum(1), torch.full((CFG.n_ood_relevant,), 0.9), atol=1e-6)
    assert torch.allclose(dom.relevant.norm(dim=1), torch.full((CFG.n_ood_relevant,), expected_norm), atol=1e-6)
    gram = dom.relevant @ dom.relevant.T  # distinct ODR patterns stay orthogonal
    assert torch.allclose(gram - torch.diag(torch.diag(gram)), torch.zeros_like(gram), atol=1e-6)


def test_ood_construction_bad_inputs():
    with pytest.raises(ValueError, match="sqrt"):
        pt.ood_coefficients(1.5, "unit")
    with pytest.raises(ValueError, match="construction"):
        pt.ood_coefficients(1.0, "triple")


def test_no_match_floor_matches_the_sampler():
    for alpha, l in ((0.4, 6), (0.8, 3)):
        p = big_batch(alpha=alpha, l=l, n=40000, seed=5)
        empirical = 0.5 * float((p.same.sum(1) == 0).float().mean())
        assert abs(empirical - pt.no_match_floor(alpha, l)) < 0.005
    assert pt.no_match_floor(1.0, 0) == 0.5
    with pytest.raises(ValueError):
        pt.no_match_floor(1.5, 3)


def test_vectorised_knn_matches_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier

    cfg = pt.Config(kappa=1.5)  # noisy: the neighbours are not trivial
    p = pt.sample_prompts(pt.out_of_domain(cfg, 1.1, gen(2)), 60, alpha=0.6, l=7, cfg=cfg, generator=gen(3))
    x, xq = p.tokens[:, :-1, : cfg.d_X].double().numpy(), p.tokens[:, -1, : cfg.d_X].double().numpy()
    y = p.labels.numpy()
    for k in (1, 3):
        ours = pt.knn_predict(x, y, xq, k)
        for i in range(len(y)):
            if len(set(y[i].tolist())) > 1:
                ref = KNeighborsClassifier(n_neighbors=k).fit(x[i], y[i]).predict(xq[i : i + 1])[0]
                assert ours[i] == ref, (k, i)
    fast, slow = pt.classical_errors(p, cfg), pt.classical_errors(p, cfg, pt.classical_classifiers())
    assert fast == slow


def test_separation_auc_and_initial_activity():
    assert pt.separation_auc([3, 4, 1, 2], [True, True, False, False]) == 1.0
    assert pt.separation_auc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert pt.separation_auc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    with pytest.raises(ValueError):
        pt.separation_auc([1, 2], [True, True])
    p = big_batch(n=200)
    act = pt.initial_activity(CFG, 0, p)
    direct = (internals.read(pt.OneLayerICL(CFG, seed=0), p.tokens, "hidden") > 0).float().mean(0)
    assert act.shape == (CFG.m,) and torch.equal(act, direct)


def test_initial_activity_known_answers():
    """Prompts whose every token is +e_0 (or -e_0): the attention output is that token, so neuron
    i's pre-activation at initialisation (W_V = init_attn I) is ``+-init_attn W_O[i, 0]`` and its
    activity the indicator of ``+-W_O[i, 0] > 0``: 1 or 0 per neuron, exactly 1/2 on a mix."""
    W_O = pt.OneLayerICL(CFG, seed=0).W_O.detach()
    e0 = torch.zeros(CFG.d)
    e0[0] = 1.0

    def prompts(signs):
        n, l = len(signs), 5
        tokens = torch.tensor(signs, dtype=torch.float32)[:, None, None] * e0.expand(n, l + 1, CFG.d)
        return pt.Prompts(tokens, torch.ones(n), torch.ones(n, l, dtype=torch.bool), torch.ones(n, l, dtype=torch.long))

    assert torch.equal(pt.initial_activity(CFG, 0, prompts([1.0] * 4)), (W_O[:, 0] > 0).float())
    assert torch.equal(pt.initial_activity(CFG, 0, prompts([-1.0] * 4)), (W_O[:, 0] < 0).float())
    assert torch.equal(pt.initial_activity(CFG, 0, prompts([1.0, -1.0] * 3)), torch.full((CFG.m,), 0.5))
    assert torch.equal(pt.initial_activity(CFG, 0, prompts([0.0] * 3)), torch.zeros(CFG.m))  # relu(0) is off


def test_forward_matches_the_papers_contraction_order():
    """The model computes p_i^T (W_K^T W_Q p_q) and W_O W_V (sum_i attn_i p_i); the paper writes
    (W_K p_i)^T (W_Q p_q) and W_O sum_i (W_V p_i) attn_i: the same function."""
    torch.manual_seed(0)
    model = pt.OneLayerICL(CFG, seed=1)
    with torch.no_grad():
        for W in (model.W_Q, model.W_K, model.W_V):
            W.add_(0.3 * torch.randn_like(W))
    p = big_batch(n=50, l=9)
    q, k = p.tokens[:, -1] @ model.W_Q.T, p.tokens[:, :-1] @ model.W_K.T
    att = torch.softmax(torch.einsum("nld,nd->nl", k, q), -1)
    hidden = torch.einsum("nl,nld->nd", att, p.tokens[:, :-1] @ model.W_V.T) @ model.W_O.T
    assert torch.allclose(model.attention(p.tokens), att, atol=1e-6)
    assert torch.allclose(internals.read(model, p.tokens, "hidden"), hidden, atol=1e-6)


# --- hook points: the internals are the forward pass's, and an override changes it ---------------


def _perturbed_model(seed=1):
    model = pt.OneLayerICL(CFG, seed=seed).double()
    with torch.no_grad():
        g = gen(seed + 100)
        for W in (model.W_Q, model.W_K, model.W_V):
            W.add_(0.3 * torch.randn(W.shape, generator=g, dtype=torch.float64))
    return model


def test_one_layer_internals_match_an_independent_computation():
    """Each recorded activation against the paper's formulas written out here, in the paper's
    contraction order: (W_K p_i)^T (W_Q p_q), then W_O sum_i (W_V p_i) attn_i."""
    model = _perturbed_model()
    p = big_batch(n=40, l=9)
    tokens = p.tokens.double()
    acts = model.internals(tokens)
    assert list(acts) == list(pt.OneLayerICL.INTERNALS)  # recorded in the order of the forward pass
    q, k, v = tokens[:, -1] @ model.W_Q.T, tokens[:, :-1] @ model.W_K.T, tokens[:, :-1] @ model.W_V.T
    att = torch.softmax((k * q[:, None]).sum(-1), dim=-1)
    mixed = (att[..., None] * tokens[:, :-1]).sum(1)
    hidden = (att[..., None] * v).sum(1) @ model.W_O.T
    active = torch.where(hidden > 0, hidden, torch.zeros_like(hidden))
    output = (active * model.a).sum(-1)
    for name, expected in {
        "attention": att,
        "mixed": mixed,
        "hidden": hidden,
        "active": active,
        "output": output,
    }.items():
        assert torch.allclose(acts[name], expected, rtol=0, atol=1e-12), name
    with torch.no_grad():
        assert torch.equal(acts["output"], model(tokens))  # the same pass, bit for bit


def test_uniform_attention_override_gives_the_hand_computed_output():
    """Clamping the attention to 1/l turns the model into a^T relu(W_O W_V mean_i p_i)."""
    model = _perturbed_model(seed=2)
    p = big_batch(n=30, l=7)
    tokens = p.tokens.double()
    uniform = torch.full((30, 7), 1 / 7, dtype=torch.float64)
    with torch.no_grad(), internals.overriding(model, attention=uniform), internals.recording(model) as acts:
        out = model(tokens)
    by_hand = torch.relu(tokens[:, :-1].mean(1) @ (model.W_O @ model.W_V).T.detach()) @ model.a
    assert torch.allclose(out, by_hand, rtol=0, atol=1e-12)
    assert torch.equal(acts["attention"], uniform)
    with torch.no_grad():
        assert not torch.allclose(model(tokens), out)  # the override ends with its block
        with internals.overriding(model, active=lambda a: torch.zeros_like(a)):
            assert torch.equal(model(tokens), torch.zeros(30, dtype=torch.float64))
    with pytest.raises(KeyError, match="no hook points"):
        with internals.overriding(model, scores=0.0):
            pass


def test_small_gpt_internals_are_its_layers_run_by_hand():
    model = pt.SmallGPT(CFG, seed=0, layers=2, heads=2, width=16)
    p = big_batch(n=6, l=5)
    acts = model.internals(p.tokens)
    with torch.no_grad():
        h = model.read_in(p.tokens)
        T = p.tokens.shape[1]
        causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        states = []
        for layer in model.blocks.layers:
            h = layer(h, src_mask=causal)
            states.append(h)
        final = model.norm(h[:, -1])
        assert torch.allclose(acts["embedded"], model.read_in(p.tokens))
        assert torch.allclose(acts["blocks"], torch.stack(states), atol=1e-6)
        assert torch.allclose(acts["final"], final, atol=1e-6)
        assert torch.allclose(acts["output"], model.read_out(final).squeeze(-1), atol=1e-6)
        with internals.overriding(model, final=0.0):  # a zero stream leaves the read-out's bias
            assert torch.equal(model(p.tokens), model.read_out.bias.expand(6))


# --- decision code: known answers on constructed inputs -------------------------------------------


class _MatchOracle(torch.nn.Module):
    """Reads the query's label from the contexts whose relevant coordinates equal the query's (the
    noise lives on the other coordinates), times ``||x_q's relevant part|| - threshold``: right on
    every prompt whose pattern is longer than ``threshold`` and has a match, wrong on the others
    (``F = 0`` counts as wrong). Records the batches it sees."""

    def __init__(self, threshold=None):
        super().__init__()
        self.threshold, self.seen = threshold, []

    def forward(self, tokens):
        self.seen.append(tokens)
        x = tokens[..., : CFG.M1]
        match = torch.isclose(x[:, :-1], x[:, -1:], atol=1e-6).all(-1)
        vote = torch.sign((match * tokens[:, :-1, CFG.d_X]).sum(-1))
        return vote if self.threshold is None else vote * (x[:, -1].norm(dim=-1) - self.threshold)


def test_ood_sweep_known_answers():
    """The pair construction's patterns have norm S1/sqrt(2), the single one's S1: a reader that
    needs a norm above 0.7 fails exactly on the short ones. Every S1 sees the same prompts."""
    S1 = [0.5, 0.9, 1.1, 1.3]
    streams = {"domain_generator": lambda: gen(10), "prompt_generator": lambda: gen(11)}
    oracle = _MatchOracle(threshold=0.7)
    pair = pt.ood_sweep([oracle, _MatchOracle()], CFG, S1, n=300, alpha=1.0, **streams)
    assert pair.shape == (2, 4)
    assert pair[0].tolist() == [1.0, 1.0, 0.0, 0.0]  # norms 0.35, 0.64, 0.78, 0.92
    assert pair[1].tolist() == [0.0] * 4  # without the norm: always right
    assert all(t.shape == (300, CFG.l_train + 1, CFG.d) for t in oracle.seen)
    labels = [t[:, :-1, CFG.d_X] for t in oracle.seen]  # the same draws at every S1
    assert all(torch.equal(labels[0], x) for x in labels)
    single = pt.ood_sweep([_MatchOracle(threshold=0.7)], CFG, S1, n=300, alpha=1.0, construction="single", **streams)
    assert single[0].tolist() == [1.0, 0.0, 0.0, 0.0]  # norms 0.5, 0.9, 1.1, 1.3
    unit = pt.ood_sweep([_MatchOracle(threshold=0.7)], CFG, S1, n=300, alpha=1.0, construction="unit", **streams)
    assert unit[0].tolist() == [0.0] * 4  # norm 1 at every S1
    unmatched = pt.ood_sweep([_MatchOracle()], CFG, S1, n=300, alpha=0.0, **streams)
    assert unmatched[0].tolist() == [1.0] * 4  # alpha' = 0: no context carries the task's patterns


def test_length_sweep_known_answers():
    """Axes (alphas, models, lengths). At alpha = 0 no context carries the task's patterns: the
    matching reader errs on every prompt. At alpha = 1 it errs only without a match, which
    happens with probability 2^-l; a constant reader errs on half the prompts."""

    class Plus(torch.nn.Module):
        def forward(self, tokens):
            return torch.ones(tokens.shape[0])

    n, lengths = 4000, [1, 2, 4]
    out = pt.length_sweep(
        [_MatchOracle(), Plus()],
        pt.in_domain(CFG, "test"),
        CFG,
        [0.0, 1.0],
        lengths,
        n=n,
        prompt_generator=lambda: gen(12),
    )
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [1.0, 1.0, 1.0]

    def se(p):
        return 4 * math.sqrt(p * (1 - p) / n)

    for k, l in enumerate(lengths):
        assert abs(out[1, 0, k] - 0.5**l) < se(0.5**l)
        assert abs(out[:, 1, k] - 0.5).max() < se(0.5)


def _label_reader(g):
    """A one-layer model with uniform attention (W_Q = W_K = 0), W_V = I and neuron i reading the
    label coordinate with gain g[i], every read-out +1/m: F = (sum of kept gains / m) max(ybar, 0),
    where ybar is the mean context label."""
    model = pt.OneLayerICL(CFG, seed=0)
    with torch.no_grad():
        model.W_Q.zero_()
        model.W_K.zero_()
        model.W_V.copy_(torch.eye(CFG.d))
        model.W_O.zero_()
        model.W_O[:, CFG.d_X] = g
        model.a.fill_(1 / CFG.m)
    return model


def test_pruning_sweep_known_answers():
    g = torch.arange(CFG.m, dtype=torch.float32) / 8  # distinct gains; neuron 0 reads nothing
    model = _label_reader(g)
    p = big_batch(n=500, l=5, seed=4)  # odd l: the mean label is never 0
    ybar = p.labels.float().mean(1)

    def expected(kept):
        F = float(kept.sum()) / CFG.m * torch.clamp(ybar, min=0)
        return [float(torch.clamp(1 - p.target * F, min=0).mean()), float((torch.sign(F) != p.target).float().mean())]

    rates = [0.0, 0.25, 0.5, 1.0]
    out = pt.pruning_sweep([model, model], [g, g], p, rates, random_draws=3, mask_generator=lambda d: gen(40 + d))
    assert set(out) == {"magnitude", "random", "largest"} and out["magnitude"].shape == (2, 2, 4)
    for k, r in enumerate(rates):
        drop = round(r * CFG.m)
        assert out["magnitude"][:, 1, k] == pytest.approx(expected(g[drop:]), rel=1e-5)
        assert out["largest"][:, 1, k] == pytest.approx(expected(g[: CFG.m - drop]), rel=1e-5)
        draws = [expected(g * pt.pruning_mask(g, r, "random", gen(40 + d))) for d in range(3)]
        assert out["random"][:, 1, k] == pytest.approx(np.mean(draws, axis=0), rel=1e-5)
    assert out["largest"][:, 0, 3].tolist() == [1.0, 1.0]  # nothing left: F = 0, hinge 1, all wrong
    with pytest.raises(ValueError, match="one set of row norms per model"):
        pt.pruning_sweep([model], [g, g], p, rates)
    with pytest.raises(ValueError, match="mask_generator"):
        pt.pruning_sweep([model], [g], p, rates)


def _geometry_model(flip=None, noisy=None):
    """Rows of W_O W_V (W_V = I): a label part +-s on q (the sign of a_i) and a feature part s along
    the mean relevant pattern; s = 10 for even neurons (the large ones), 1 for odd ones. ``flip``
    turns one neuron's label part around; ``noisy`` gives one neuron's feature part a component
    on an irrelevant pattern (3 along mu-bar, 4 off it: a share of 3/5 in span(mu))."""
    model = pt.OneLayerICL(CFG, seed=0)
    mu_bar = pt.in_domain(CFG, "all").relevant.mean(0)
    mu_bar = mu_bar / mu_bar.norm()
    with torch.no_grad():
        model.W_V.copy_(torch.eye(CFG.d))
        model.W_O.zero_()
        for i in range(CFG.m):
            s = 10.0 if i % 2 == 0 else 1.0
            sign = 1.0 if model.a[i] > 0 else -1.0
            model.W_O[i, CFG.d_X] = -sign * s if i == flip else sign * s
            model.W_O[i, : CFG.d_X] = s * mu_bar
            if i == noisy:
                model.W_O[i, : CFG.d_X] = 3 * mu_bar * s / 5
                model.W_O[i, CFG.M1] = 4 * s / 5
    return model


def test_neuron_geometry_known_answers():
    model = _geometry_model(flip=3, noisy=2)
    geo = pt.neuron_geometry(model, CFG)
    pos = model.a > 0
    expected_angle = torch.where(pos, 0.0, math.pi)
    expected_angle[3] = math.pi - expected_angle[3]
    assert torch.allclose(geo["label_angle"], expected_angle, atol=1e-3)
    big = torch.tensor([10.0 if i % 2 == 0 else 1.0 for i in range(CFG.m)])
    assert torch.allclose(geo["label_norm"], big) and torch.allclose(geo["feature_norm"], big, rtol=1e-6)
    feature_angle = torch.zeros(CFG.m)
    feature_angle[2] = math.acos(3 / 5)
    assert torch.allclose(geo["feature_angle"], feature_angle, atol=1e-3)
    assert torch.equal(geo["positive"], pos)
    assert torch.allclose(geo["row_norm"], big * math.sqrt(2), rtol=1e-6)


def test_feature_geometry_known_answers():
    clean = _geometry_model()
    label_ok, cosines, in_span = pt.feature_geometry([clean], CFG, [pt.neuron_geometry(clean, CFG)])
    assert label_ok == [True] and cosines == pytest.approx([1.0], abs=1e-6) and in_span == pytest.approx([1.0])
    models = [_geometry_model(flip=4), _geometry_model(flip=5), _geometry_model(noisy=6)]  # 4, 6 large; 5 small
    label_ok, cosines, in_span = pt.feature_geometry(models, CFG, [pt.neuron_geometry(m, CFG) for m in models])
    assert label_ok == [False, True, True]  # a flipped large neuron fails; a small one is not read
    assert in_span == pytest.approx([1.0, 1.0, 0.6], rel=1e-5)
    assert cosines == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)  # one noisy neuron of 32 leaves the median


def test_first_below_known_answers():
    lengths = np.arange(1, 8)
    assert pt.first_below(lengths, [0.5, 0.2, 0.02, 0.009, 0.02, 0.001, 0.0]) == 4.0
    assert pt.first_below(lengths, [0.5, 0.2, 0.02, 0.009, 0.02, 0.001, 0.0], level=0.1) == 3.0
    assert math.isnan(pt.first_below(lengths, [0.5] * 7))
    floor = [pt.no_match_floor(0.5, int(l)) for l in range(1, 40)]  # 0.5 * 0.75^l < 0.01 from l = 14
    assert pt.first_below(range(1, 40), floor) == 14.0


def test_pruning_checks_known_answers():
    rates = np.array([0.0, 0.05, 0.1, 0.15, 0.2])
    base = np.array([[1.0, 1.0, 1.05, 1.3, 2.0], [1.0, 1.2, 1.4, 1.6, 1.8]])  # per model
    largest = np.array(
        [
            [1.0, 1.6, 2.0, 2.5, 3.0],  # rise / rate: 12, 10, 10, 10
            [1.0, 1.5, 2.0, 2.3, 2.5],
        ]
    )  # 10, 10, 8.7, 7.5: sublinear
    prune = {
        "magnitude": np.stack([base, base]),
        "random": np.stack([base + 0.1, base - 0.1]),
        "largest": np.stack([largest, largest]),
    }
    checks = pt.pruning_checks(prune, rates, [0.1, 0.1])
    assert checks["within"] == pytest.approx([1.05, 1.4])
    assert checks["random_worse"] == [True, True]
    assert checks["linear"] == [True, False]
    prune["random"][0, 1] = base[1] - 0.1
    assert pt.pruning_checks(prune, rates, [0.1, 0.1])["random_worse"] == [True, False]
    assert pt.pruning_checks(prune, rates, [0.0, 0.2])["within"] == pytest.approx([1.0, 1.8])


def test_large_group_and_the_baseline_ratio():
    assert pt.large_group(torch.tensor([0.3, 0.1, 0.9, 0.2]), 2).tolist() == [True, False, True, False]
    results = {
        4: {"1-NN": 0.2, "SVM": 0.1, "transformer (ICL)": 0.05, "no-match floor": 0.01},
        8: {"1-NN": 0.1, "SVM": 0.2, "transformer (ICL)": 0.01, "no-match floor": 0.0},
    }
    pooled = pt.pooled(results, [4, 8])
    assert pooled == pytest.approx({"1-NN": 0.3, "SVM": 0.3, "transformer (ICL)": 0.06, "no-match floor": 0.01})
    ratio, best = pt.icl_ratio({"1-NN": 0.3, "SVM": 0.2, "transformer (ICL)": 0.05}, ["1-NN", "SVM"])
    assert best == "SVM" and ratio == pytest.approx(0.25)


def test_sample_complexity_readings_known_answers():
    alphas = [0.25, 0.5, 1.0]
    steps = np.arange(0, 1001, 10)
    # run (alpha, seed) drops from 0.5 to the floor at 200 / alpha steps (seed 1: 10% later)
    runs = [(a, s) for a in alphas for s in range(2)]
    errors = np.array(
        [np.where(steps < round(200 / a * (1 + 0.1 * s)), 0.5, pt.no_match_floor(a, 20)) for a, s in runs]
    )
    floors = [pt.no_match_floor(a, 20) for a, _ in runs]
    t = pt.times_to(steps, errors, floors, 0.01, len(alphas))
    assert t.tolist() == [[800, 880], [400, 440], [200, 220]]
    assert pt.median_slope(alphas, t) == pytest.approx(-1.0)
    assert pt.times_to(steps, errors, [0.0] * 6, 0.001, 3)[0].tolist() == [np.inf, np.inf]  # never that low
    lo, hi = pt.bootstrap_slope(alphas, t, np.random.default_rng(0), draws=300)
    assert lo < -1.0 < hi and hi - lo < 0.2
    flat = np.full((3, 4), 100.0)
    assert pt.bootstrap_slope(alphas, flat, np.random.default_rng(0), draws=200) == pytest.approx((0.0, 0.0))
    censored = np.array([[np.inf, np.inf], [400, 440], [200, 220]])
    assert all(math.isnan(x) for x in pt.bootstrap_slope(alphas, censored, np.random.default_rng(0), draws=200))
    times = np.array([400.0, 480.0, 100.0, 120.0])
    assert pt.two_point_slope(times, [0.25, 0.25, 1.0, 1.0], [0.25, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one floor per run"):
        pt.times_to(steps, errors, floors[:5], 0.01, 3)


def test_checks_stay_out_of_the_weight_cache_key():
    """Thresholds, test sizes and switches are check fields: changing one keeps the key; a trained
    size changes it. The training module's source key covers the measures its histories hold,
    not the readings, baselines or plots."""
    import dataclasses
    from pathlib import Path

    book = pt.CONFIGS["book"]
    assert set(runtime.check_fields(book)) == {"n_test", "lr_control", "task_control", "n_baseline", "gpt_judged"}
    key = runtime.cache_key("01", "main", book, uses="iclbook.patterns.training")
    for change in ({"n_test": 7}, {"n_baseline": 3}, {"lr_control": False}, {"gpt_judged": False}):
        assert (
            runtime.cache_key("01", "main", dataclasses.replace(book, **change), uses="iclbook.patterns.training")
            == key
        )
    assert runtime.cache_key("01", "main", dataclasses.replace(book, steps=7), uses="iclbook.patterns.training") != key
    names = {Path(p).name for p in runtime.module_sources("iclbook.patterns.training")}
    assert {"training.py", "model.py", "data.py", "measures.py", "train.py", "internals.py"} <= names
    assert not names & {"complexity.py", "baselines.py", "nulls.py", "curves.py", "plots.py", "config.py"}


# ---------------------------------------------------------------------------------------------
# The nulls (issue 29): what each row is read against
# ---------------------------------------------------------------------------------------------


def test_pruning_draws_match_the_mask_by_mask_sweep():
    """One forward pass for every mask gives what evaluate gives mask by mask, on a trained-looking
    model and on the label reader; the draws' mean is the "random" entry."""
    model = pt.OneLayerICL(CFG, seed=3)
    norms = model.W_O.detach().norm(dim=-1)
    p = big_batch(n=300, l=6, seed=5)
    rates = [0.0, 0.1, 0.25, 0.5]
    slow = pt.pruning_sweep([model], [norms], p, rates, random_draws=4, mask_generator=lambda d: gen(70 + d))
    fast = pt.pruning_draws([model], [norms], p, rates, draws=4, mask_generator=lambda d: gen(70 + d))
    for how in ("magnitude", "random", "largest"):
        assert fast[how] == pytest.approx(slow[how], rel=1e-5, abs=1e-7)
    assert fast["random draws"].shape == (2, 1, 4, 4)
    assert fast["random draws"].mean(-1) == pytest.approx(fast["random"])
    only = pt.pruning_draws([model], [norms], p, rates, draws=0, mask_generator=None, hows=("magnitude",))
    assert set(only) == {"magnitude"} and only["magnitude"] == pytest.approx(slow["magnitude"], rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="draws >= 1"):
        pt.pruning_draws([model], [norms], p, rates, draws=0, mask_generator=None)
    with pytest.raises(ValueError, match="one set of row norms per model"):
        pt.pruning_draws([model], [norms, norms], p, rates, draws=1, mask_generator=lambda d: gen(d))


def test_pruning_rules_known_answers():
    """Magnitude below the masks' 5% quantile at the small group's rate, largest-first above their
    95% quantile from rates[2], rise/rate non-decreasing; a random mask read in place of both
    orders passes rarely."""
    rates = np.array([0.0, 0.1, 0.2, 0.3])
    rng = np.random.default_rng(0)
    base = 0.01
    draws = base + rates[None, :, None] * (1 + 0.1 * rng.standard_normal((1, 4, 200)))  # (models, rates, draws)
    draws[:, 0] = base
    prune = {
        "magnitude": np.stack([np.array([[base, base, base * 1.01, base * 1.5]]), np.zeros((1, 4))]),
        "largest": np.stack([np.array([[base, base + 0.5, base + 1.2, base + 2.1]]), np.zeros((1, 4))]),
        "random draws": np.stack([draws, np.zeros_like(draws)]),
    }
    r = pt.pruning_rules(prune, rates, [0.2])
    assert r == {"magnitude_better": [True], "largest_worse": [True], "linear": [True]}
    # largest-first that only matches the masks' mean is not worse than 95% of them
    prune_mean = {**prune, "largest": np.stack([base + rates[None] * 1.0, np.zeros((1, 4))])}
    assert pt.pruning_rules(prune_mean, rates, [0.2])["largest_worse"] == [False]
    # growth that slows down is not linear
    slow = {**prune, "largest": np.stack([np.array([[base, base + 0.5, base + 0.6, base + 0.65]]), np.zeros((1, 4))])}
    assert pt.pruning_rules(slow, rates, [0.2])["linear"] == [False]
    assert pt.pruning_null_share(prune, rates, [0.2]) < 0.05


def test_mix_null_known_answers():
    """Feature parts exactly along the mean pattern have cosine 1; the random mixes keep the
    in-span norm and the out-of-span part, and their cosine is that of a uniform non-negative
    mix (about 0.87 for six patterns) scaled by the in-span share."""
    model = _geometry_model(noisy=None)
    geo = pt.neuron_geometry(model, CFG)
    _, cos, _ = pt.feature_geometry([model], CFG, [geo])
    assert cos[0] == pytest.approx(1.0, abs=1e-6)
    null = pt.mix_null([model], CFG, [geo], np.random.default_rng(0), draws=400)
    assert null.shape == (1, 400)
    assert 0.8 < np.median(null) < 0.92 and null.max() < 1.0
    assert pt.above_null(cos, null).tolist() == [True]
    assert pt.above_null([np.median(null)], null).tolist() == [False]
    share = pt.null_pass_share(np.random.default_rng(1).standard_normal((4, 500)))
    assert share < 0.01  # four seeds each above its own 95th percentile: about 0.05^4
    assert pt.null_pass_share(np.random.default_rng(1).standard_normal((1, 1000))) == pytest.approx(0.05, abs=0.01)
    # a feature part with an out-of-span component: its null keeps it, so the cosine drops with the share
    noisy = _geometry_model(noisy=0)
    g = pt.neuron_geometry(noisy, CFG)
    assert pt.mix_null([noisy], CFG, [g], np.random.default_rng(0), draws=50).shape == (1, 50)


def test_relabel_null_and_welch_t():
    a, b = [1.0, 1.1, 0.9, 1.0], [0.0, 0.1, -0.1, 0.0]
    t = pt.welch_t(a, b)
    assert t == pytest.approx(1.0 / np.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 4))
    null = pt.relabel_null(a, b)
    assert len(null) == 70 and null.max() == pytest.approx(t)  # the original labelling is the most extreme
    assert np.median(null) == pytest.approx(0.0, abs=1e-9)  # every relabelling has its mirror


def test_welch_interval_matches_scipy_welch_test():
    """The interval's edges are where SciPy's Welch test (an independent computation) gives
    p = 0.05 for the shifted difference; too few values is an error."""
    from scipy.stats import ttest_ind

    a, b = [3.1, 2.7, 3.6], [2.0, 2.4, 1.9, 2.2]
    diff, lo, hi = pt.welch_interval(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    for edge in (lo, hi):
        p = ttest_ind(np.asarray(a) - edge, b, equal_var=False).pvalue
        assert p == pytest.approx(0.05, abs=1e-9)
    assert pt.welch_t(a, b) == pytest.approx(ttest_ind(a, b, equal_var=False).statistic)
    masks = pt.relabellings(3, 3)
    assert len(masks) == 20 and masks[0].tolist() == [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="two or more"):
        pt.welch_interval([1.0], b)


def test_readers_without_training():
    """k-NN at a small noise is an exact lookup (its error is the no-match floor's order); a random
    context's label is right about half the time; the length sweep draws the prompts of
    length_sweep."""
    dom = pt.in_domain(CFG, "test")
    p = big_batch(n=4000, l=8, seed=6, domain=dom)
    no_match = float(0.5 * (p.same.sum(1) == 0).float().mean())
    assert pt.knn_error(p, CFG) == pytest.approx(no_match, abs=0.02)
    assert abs(pt.random_context_error(p, gen(1)) - 0.5) < 0.05
    lengths = [2, 8]
    sweep = pt.knn_length_sweep(dom, CFG, [0.6, 1.0], lengths, n=500, prompt_generator=lambda: gen(9))
    direct = pt.knn_error(pt.sample_prompts(dom, 500, alpha=1.0, l=8, cfg=CFG, generator=gen(9)), CFG)
    assert sweep.shape == (2, 2) and sweep[1, 1] == direct
    floor_star = np.array([4.0, 2.0])
    errors = np.array([[0.5, 0.02, 0.005], [0.3, 0.1, 0.05]])
    assert pt.l_star_ratio([1, 2, 3], errors, floor_star).tolist() == [0.75, 2.0]  # never below: (3 + 1) / 2


def test_alpha_shuffles_and_ordering_beyond_noise():
    alphas = [0.25, 0.5, 1.0]
    t = np.array([[800.0, 880], [400, 440], [200, 220]])
    out = pt.alpha_shuffles(alphas, t, np.random.default_rng(0), shuffles=600)
    # 90 distinct assignments of six times to three pairs, of which the ordered ones are few
    assert out["slopes"].shape == (600,) and 0.0 < out["ordered"] < 0.2
    assert np.nanmin(out["slopes"]) <= -0.99 and np.nanmax(out["slopes"]) > 0.5
    assert pt.falls_beyond_noise([0.10, 0.05, 0.01], 2000)
    assert not pt.falls_beyond_noise([0.50, 0.49, 0.48], 2000)  # ordered, but within noise
    assert not pt.falls_beyond_noise([0.10, 0.11, 0.01], 2000)  # not ordered
    # error curves: read as their means over the lengths, with the mean's standard error
    curves_ = np.array([[0.30, 0.10, 0.02], [0.20, 0.05, 0.01], [0.10, 0.02, 0.0]])
    means, se = pt.curve_means(curves_, 1000)
    assert means == pytest.approx([0.14, 0.26 / 3, 0.04])
    one = np.sqrt(0.3 * 0.7 / 1000)
    assert se[0] == pytest.approx(np.sqrt(one**2 + 0.1 * 0.9 / 1000 + 0.02 * 0.98 / 1000) / 3)
    assert se[2] > 0  # a length read at 0 errors still counts 1 / n
    assert pt.falls_beyond_noise(curves_, 1000)
    # ordered at the first length only: the means are not
    assert not pt.falls_beyond_noise([[0.30, 0.01, 0.01], [0.20, 0.05, 0.05], [0.10, 0.10, 0.10]], 1000)
    # ordered at every length, but by less than the noise of the means
    assert not pt.falls_beyond_noise([[0.31, 0.11], [0.305, 0.105], [0.30, 0.10]], 1000)
    with pytest.raises(ValueError, match="points, lengths"):
        pt.curve_means([0.1, 0.2], 1000)


def test_shuffled_auc_is_chance():
    scores = np.arange(64, dtype=float)
    group = scores >= 32  # perfectly separated
    assert pt.separation_auc(scores, group) == 1.0
    null = pt.shuffled_auc(scores, group, np.random.default_rng(0), draws=300)
    assert null.shape == (300,) and abs(null.mean() - 0.5) < 0.02


def test_compare_adds_the_readers_without_the_mechanism():
    dom = pt.out_of_domain(CFG, 1.1, gen(2))
    model = pt.OneLayerICL(CFG, seed=0)
    errs = pt.compare([model], dom, CFG, kappa=0.5, alpha=0.8, l=6, n=30, generator=gen(3), untrained=[model])
    assert set(pt.REFERENCES) <= set(errs) and errs["untrained transformer"] == errs["transformer (ICL)"]
    plain = pt.compare([model], dom, CFG, kappa=0.5, alpha=0.8, l=6, n=30, generator=gen(3))
    assert "random context" not in plain and plain["1-NN"] == errs["1-NN"]


# ---------------------------------------------------------------------------------------------
# Issues 28 and 30: the stacked trainer, fast readers, the new constructions and statistics
# ---------------------------------------------------------------------------------------------


def test_stacked_prompts_are_each_members_own_and_the_axis_path_is_exact(monkeypatch):
    from iclbook.patterns import data

    dom = pt.in_domain(CFG, "train")
    st = pt.sample_stacked(dom, 16, alphas=[0.4, 1.0], l=6, cfg=CFG, generators=[gen(1), gen(2)])
    for i, (a, s) in enumerate([(0.4, 1), (1.0, 2)]):
        p = pt.sample_prompts(dom, 16, alpha=a, l=6, cfg=CFG, generator=gen(s))
        assert torch.equal(st.tokens[i], p.tokens) and torch.equal(st.labels[i], p.labels)
    fast = pt.sample_prompts(dom, 50, alpha=0.6, l=7, cfg=CFG, generator=gen(3))
    monkeypatch.setattr(data, "_axes", lambda domain: None)  # the general sum of the patterns
    slow = pt.sample_prompts(dom, 50, alpha=0.6, l=7, cfg=CFG, generator=gen(3))
    assert torch.equal(fast.tokens, slow.tokens)
    with pytest.raises(ValueError, match="one alpha per generator"):
        pt.sample_stacked(dom, 4, alphas=[0.5], l=3, cfg=CFG, generators=[gen(), gen()])


def test_stacked_training_is_the_shared_loop_to_the_bit_and_stops_members_alone():
    from iclbook import train

    seeds, alphas = [1, 2, 3], [0.4, 0.8, 1.0]
    ref = [pt.OneLayerICL(CFG, seed=s) for s in seeds]
    dom = pt.in_domain(CFG, "train")

    def sampler(a):
        return lambda g: pt.sample_prompts(dom, CFG.batch, alpha=a, l=CFG.l_train, cfg=CFG, generator=g).batch()

    train.train(
        ref,
        pt.hinge,
        [sampler(a) for a in alphas],
        steps=30,
        lr=CFG.lr,
        optimizer="sgd",
        generators=[runtime.stream("batches", s) for s in seeds],
    )
    ours = [pt.OneLayerICL(CFG, seed=s) for s in seeds]
    pt.train_stacked(ours, CFG, seeds, alphas, steps=30, lr=CFG.lr)
    for a, b in zip(ref, ours):
        assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("W_Q", "W_K", "W_V", "W_O"))
    # member 1 stops after 10 steps: the others are unchanged, it equals a 10-step run
    part = [pt.OneLayerICL(CFG, seed=s) for s in seeds]
    val = pt.sample_prompts(pt.in_domain(CFG, "test"), 40, alpha=0.8, l=CFG.l_train, cfg=CFG, generator=gen(4))
    hist = pt.train_stacked(
        part,
        CFG,
        seeds,
        alphas,
        steps=30,
        lr=CFG.lr,
        budgets=[30, 10, 30],
        on_checkpoint=pt.error_checkpoints([val] * 3),
        checkpoint_every=5,
    )
    short = [pt.OneLayerICL(CFG, seed=s) for s in seeds]
    pt.train_stacked(short, CFG, seeds, alphas, steps=10, lr=CFG.lr)
    assert torch.equal(part[0].W_O, ours[0].W_O) and torch.equal(part[2].W_O, ours[2].W_O)
    assert torch.equal(part[1].W_O, short[1].W_O)
    errs = hist.curve("error")
    assert errs.shape == (3, 7) and np.all(errs[1, 2:] == errs[1, 2])  # measured until step 10, then repeated
    # a member that settles at once (threshold 1) stops; the loop ends when none is left, the history is complete
    done = pt.train_stacked(
        [pt.OneLayerICL(CFG, seed=1)],
        CFG,
        [1],
        [0.8],
        steps=30,
        lr=CFG.lr,
        settle=([1.0], 5),
        on_checkpoint=pt.error_checkpoints([val]),
        checkpoint_every=5,
    )
    assert list(done.steps) == [0, 5, 10, 15, 20, 25, 30]
    with pytest.raises(ValueError, match="one learning rate"):
        pt.train_stacked(ours, CFG, seeds, alphas, steps=3, lr=[1.0])


def test_stacked_margins_and_errors_are_the_models():
    models = [pt.OneLayerICL(CFG, seed=s) for s in (0, 1)]
    p = big_batch(n=300, l=9)
    W = {n: torch.stack([getattr(m, n).detach() for m in models]) for n in ("W_Q", "W_K", "W_V", "W_O")}
    F = pt.stacked_margins(W, models[0].a, p.tokens)
    for m, f in zip(models, F):
        assert torch.allclose(f, m(p.tokens).detach(), atol=1e-6)
    assert pt.stacked_errors(models, p) == pytest.approx([pt.error(m, p) for m in models], abs=1 / 300)


def test_fast_classifiers_give_scikit_learns_labels():
    from iclbook.patterns.baselines import FAST, _fit_predict, classical_classifiers

    cfg = dataclasses_replace(CFG, kappa=1.5)
    p = pt.sample_prompts(pt.out_of_domain(cfg, 1.1, gen(2)), 120, alpha=0.6, l=10, cfg=cfg, generator=gen(5))
    x = p.tokens[:, :-1, : cfg.d_X].double().numpy()
    xq = p.tokens[:, -1, : cfg.d_X].double().numpy()
    y = p.labels.numpy()
    two = ~(y == y[:, :1]).all(1)
    for name, fn in FAST.items():
        ours = fn(x[two], y[two], xq[two])
        theirs = _fit_predict(classical_classifiers()[name], x[two], y[two], xq[two])
        # the SVMs run scikit-learn's own libsvm calls; logistic regression reaches the optimum that
        # L-BFGS approaches to its tolerance, so a query on the boundary may differ
        assert (ours == theirs).mean() >= (1.0 if "SVM" in name else 0.98), name


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_logistic_predict_separates_a_separable_prompt():
    x = np.array([[[0.0, 1.0], [0.1, 1.2], [1.0, 0.0], [1.2, 0.1]]])
    y = np.array([[1, 1, -1, -1]])
    assert pt.logistic_predict(x, y, np.array([[0.0, 2.0]]))[0] == 1
    assert pt.logistic_predict(x, y, np.array([[2.0, 0.0]]))[0] == -1


def test_informed_knn_and_the_oracles():
    cfg = dataclasses_replace(CFG, kappa=3.0)  # noise larger than the patterns: the plain 1-NN errs
    p = pt.sample_prompts(pt.out_of_domain(cfg, 1.1, gen(2)), 3000, alpha=0.8, l=10, cfg=cfg, generator=gen(6))
    informed, plain = pt.informed_knn_error(p, cfg), pt.knn_error(p, cfg)
    assert informed < plain
    o = pt.oracle_errors(p)
    assert o["oracle"] == pytest.approx(pt.no_match_floor(0.8, 10), abs=0.01)
    assert 0 <= o["oracle + opposite"] <= o["oracle"]
    assert o["oracle + opposite"] < 0.5 * o["oracle"]  # the other pattern's contexts carry the opposite label


def test_scaled_lengths_sparse_split_and_small_norm_patterns():
    assert [pt.scaled_length(a, 4) for a in (0.4, 0.6, 0.8, 1.0)] == [20, 13, 10, 8]
    with pytest.raises(ValueError):
        pt.scaled_length(0.0, 4)
    sparse = pt.training_tasks(6, "sparse")
    assert len(sparse) == 6 and sorted(sparse[:, 0].tolist()) == sorted(sparse[:, 1].tolist()) == list(range(6))
    for S1 in (-0.5, 0.0, 0.3, 0.7):
        c1, c2 = pt.ood_coefficients(S1, "unit", norm=0.5)
        assert c1 + c2 == pytest.approx(S1) and math.hypot(c1, c2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="sqrt"):
        pt.ood_coefficients(0.8, "unit", norm=0.5)
    with pytest.raises(ValueError):
        pt.out_of_domain(CFG, 0.0, gen(), "pair")
    base = pt.out_of_domain(CFG, 1.1, gen(7))
    assert torch.equal(pt.out_of_domain(CFG, 1.1, gen(7), outside=0.0).irrelevant, base.irrelevant)
    moved = pt.out_of_domain(CFG, 1.1, gen(7), outside=0.6)
    assert torch.allclose(moved.irrelevant.norm(dim=1), torch.ones(len(moved.irrelevant)), atol=1e-5)
    assert torch.allclose(
        moved.irrelevant[:, : CFG.M1].norm(dim=1), torch.full((len(moved.irrelevant),), 0.6), atol=1e-5
    )


def test_pooled_slope_excluded_and_shuffles_with_a_statistic():
    alphas = [0.4, 0.6, 0.8, 1.0]
    t = np.outer(np.array(alphas) ** -0.7, [100.0, 120.0, 90.0])
    assert pt.pooled_slope(alphas, t) == pytest.approx(-0.7)
    assert math.isnan(pt.pooled_slope(alphas, np.where(t > 200, np.inf, t)))
    assert pt.excluded((-0.9, -0.5), {"0": 0.0, "-2/3": -2 / 3, "-1": -1.0}) == ["0", "-1"]
    assert pt.excluded((np.nan, 1.0), {"0": 0.0}) == []
    lo, hi = pt.bootstrap_slope(alphas, t, np.random.default_rng(0), draws=200, stat=pt.pooled_slope)
    assert lo <= -0.7 <= hi
    sh = pt.alpha_shuffles(alphas, t, np.random.default_rng(1), shuffles=50, stat=pt.pooled_slope)
    assert sh["slopes"].shape == (50,)


def test_small_gpt_runs_its_last_block_at_the_query_and_reads_each_blocks_attention():
    model = pt.SmallGPT(CFG, seed=0, layers=2, heads=2, width=16)
    p = big_batch(n=30, l=6)
    with torch.no_grad():
        assert torch.allclose(model(p.tokens), model.internals(p.tokens)["output"], atol=1e-5)
    att = model.layer_attention(p.tokens)
    assert att.shape == (2, 30, 6) and bool((att.sum(-1) <= 1 + 1e-6).all())
