"""Unit tests of iclbook.patterns (Li et al. 2024): generator statistics, the task split, the
model's shapes and observables, the hinge loss, pruning masks and bad inputs."""

import math

import pytest
import torch

from iclbook import patterns as pt
from iclbook import runtime

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
    assert torch.all(p.tokens[:, -1, CFG.d_X:] == 0), "the query carries no label"
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
    label_part = p.tokens[:, :-1, CFG.d_X:]
    assert torch.allclose(label_part[..., 0], p.labels.float())
    assert torch.all(label_part[..., 1:] == 0)
    # inputs are mu_j + kappa nu_k with |kappa| <= K: the relevant part has norm beta exactly
    x = p.tokens[:, :-1, : CFG.M1]
    assert torch.allclose(x.norm(dim=-1), torch.full(x.shape[:2], CFG.beta))
    noise = p.tokens[:, :-1, CFG.M1: CFG.d_X].norm(dim=-1)
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
    assert model.hidden(p.tokens).shape == (9, CFG.m)
    assert model.neuron_rows().shape == (CFG.m, CFG.d)
    assert float(model.a.sum()) == 0.0 and torch.allclose(model.a.abs(), torch.full((CFG.m,), 1 / CFG.m))
    # the output is exactly a^T relu(hidden)
    assert torch.allclose(model(p.tokens), torch.relu(model.hidden(p.tokens)) @ model.a)


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
    cfg = pt.Config(steps=60, checkpoint_every=30)
    models, hist = pt.train_models(cfg, [0, 1], steps=60,
                                   on_checkpoint=lambda step, ms: {"n": len(ms)})
    assert len(models) == 2 and [c["step"] for c in hist["checkpoints"]] == [0, 30, 60]
    first, last = hist["loss"][0], hist["loss"][-1]
    assert all(b < a for a, b in zip(first, last))


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
    assert len(balanced) == 18                                   # shifts 1, 2, 3 for every pattern
    for column in (0, 1):                                        # every pattern 3x positive, 3x negative
        assert set(collections.Counter(balanced[:, column].tolist()).values()) == {3}
    for M in range(4, 13):                                       # the balanced split meets the share for any M
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
    expected_norm = {"pair": 0.9 / math.sqrt(2), "single": 0.9, "unit": 1.0,
                     "mixed": math.hypot(1.9, 1.0)}[construction]
    dom = pt.out_of_domain(CFG, 0.9, gen(1), construction)
    coef = dom.relevant @ base.T / CFG.beta**2
    assert torch.allclose(coef.sum(1), torch.full((CFG.n_ood_relevant,), 0.9), atol=1e-6)
    assert torch.allclose(dom.relevant.norm(dim=1), torch.full((CFG.n_ood_relevant,), expected_norm), atol=1e-6)
    gram = dom.relevant @ dom.relevant.T                         # distinct ODR patterns stay orthogonal
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

    cfg = pt.Config(kappa=1.5)                                   # noisy: the neighbours are not trivial
    p = pt.sample_prompts(pt.out_of_domain(cfg, 1.1, gen(2)), 60, alpha=0.6, l=7, cfg=cfg, generator=gen(3))
    x, xq = p.tokens[:, :-1, : cfg.d_X].double().numpy(), p.tokens[:, -1, : cfg.d_X].double().numpy()
    y = p.labels.numpy()
    for k in (1, 3):
        ours = pt.knn_predict(x, y, xq, k)
        for i in range(len(y)):
            if len(set(y[i].tolist())) > 1:
                ref = KNeighborsClassifier(n_neighbors=k).fit(x[i], y[i]).predict(xq[i: i + 1])[0]
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
    assert act.shape == (CFG.m,) and float(act.min()) >= 0 and float(act.max()) <= 1
    direct = (pt.OneLayerICL(CFG, seed=0).hidden(p.tokens) > 0).float().mean(0)
    assert torch.equal(act, direct)


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
    assert torch.allclose(model.hidden(p.tokens), hidden, atol=1e-6)
