"""Unit tests of iclbook.contextual: the identities of Dherin et al. (2025) in float64, the data,
the layers' fast paths against their definitions, shapes, and clear errors for bad input."""

import pytest
import torch

from iclbook import contextual as cx
from iclbook import runtime

TOL = 1e-12
CFG = cx.replace(cx.CONFIGS["smoke"], N=12, width=16)
KINDS = ["softmax", "window", "linear", "rnn", "gru", "ssm"]


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def prompts(n=8, seed=0, N=CFG.N):
    return cx.sample_prompts(n, N=N, d=CFG.d, generator=runtime.generator(seed))


# --- data ----------------------------------------------------------------------------------------


def test_prompts_shapes_and_labels():
    tokens, target = prompts(n=5)
    assert tokens.shape == (5, CFG.N + 1, CFG.d + 1) and target.shape == (5,)
    assert torch.all(tokens[:, -1, -1] == 0), "the query's label slot must be empty"
    # all labels come from one linear function per prompt: recover w from the context, predict y_q
    x, y = tokens[:, :-1, :-1], tokens[:, :-1, -1]
    w = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    assert torch.allclose(torch.einsum("bd,bd->b", w, tokens[:, -1, :-1]), target, atol=1e-10)


def test_prompts_statistics():
    tokens, target = cx.sample_prompts(20000, N=3, d=2, generator=runtime.generator(1))
    x = tokens[..., :-1]
    assert abs(float(x.mean())) < 0.02 and abs(float(x.var()) - 1) < 0.02
    # E[<w, x_q>^2] = d: the loss of a model that ignores the context and predicts 0
    assert abs(float((target**2).mean()) - 2.0) < 0.1


def test_prompts_are_deterministic():
    a, b = prompts(seed=3), prompts(seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], prompts(seed=4)[0])


@pytest.mark.parametrize("args", [dict(n_prompts=0, N=3, d=2), dict(n_prompts=2, N=-1, d=2),
                                  dict(n_prompts=2, N=3, d=0)])
def test_prompts_bad_input(args):
    n = args.pop("n_prompts")
    with pytest.raises(ValueError):
        cx.sample_prompts(n, generator=runtime.generator(0), **args)


# --- layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_prefixes_and_suffixes_match_definition(kind):
    block = cx.make_block(kind, CFG, seed=1)
    tokens, _ = prompts()
    context, query = cx.split(tokens)
    pre, suf = block.layer.prefixes(context, query), block.layer.suffixes(context, query)
    N = context.shape[1]
    assert pre.shape == suf.shape == (tokens.shape[0], N + 1, block.layer.d_out)
    for i in (0, 1, N // 2, N):
        assert torch.allclose(pre[:, i], block.layer(cx.join(context[:, :i], query)), atol=TOL)
        assert torch.allclose(suf[:, i], block.layer(cx.join(context[:, i:], query)), atol=TOL)


def test_softmax_on_query_alone_is_the_value_path():
    layer = cx.make_block("softmax", CFG, seed=2).layer
    _, query = cx.split(prompts()[0])
    ov = layer.o(layer.v(query))  # W_O W_V x + b_O: one key, softmax weight 1
    assert torch.allclose(layer(query.unsqueeze(1)), ov, atol=TOL)


def test_sliding_window_ignores_old_tokens():
    layer = cx.make_block("window", CFG, seed=2).layer
    tokens, _ = prompts()
    changed = tokens.clone()
    changed[:, 0] += 5.0  # outside the last `window` tokens
    assert torch.allclose(layer(tokens), layer(changed), atol=TOL)
    assert layer.weights(tokens).shape[-1] == CFG.window


def test_block_variants_and_bad_arguments():
    with pytest.raises(ValueError):
        cx.make_block("nope", CFG, seed=0)
    with pytest.raises(ValueError):
        cx.ContextualBlock(cx.TanhRNN(3, 16), 8, variant="skip")  # d_out 16 != d_model 3
    with pytest.raises(ValueError):
        cx.ContextualBlock(cx.SoftmaxAttention(3), 8, variant="postln")
    with pytest.raises(ValueError):
        cx.SoftmaxAttention(3, heads=0)
    tokens, _ = prompts()
    for variant in ("plain", "skip", "preln"):
        block = cx.make_block("softmax", CFG, variant, seed=0)
        assert block(tokens).shape == (tokens.shape[0],)


# --- Theorem 2.2 and Appendix A ------------------------------------------------------------------


def test_rank_one_update_maps_reduced_to_full():
    g = runtime.generator(5)
    W = torch.randn(7, 4, generator=g)
    a_full, a_red = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    dW = cx.rank_one_update(W, a_full, a_red)
    assert dW.shape == (3, 7, 4)
    assert torch.allclose(torch.einsum("bhm,bm->bh", W + dW, a_red), a_full @ W.T, atol=TOL)
    assert float(cx.rank_ratio(dW).max()) < TOL


def test_rank_one_update_is_minimum_norm():
    """Any X with X a = W dA is at least as large as dW in Frobenius norm."""
    g = runtime.generator(6)
    W = torch.randn(6, 4, generator=g)
    a_full, a_red = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    dW = cx.rank_one_update(W, a_full, a_red)[0]
    a = a_red[0]
    for _ in range(20):
        # add anything that annihilates a: X = dW + Z (I - a a^T / |a|^2)
        Z = torch.randn(6, 4, generator=g)
        X = dW + Z @ (torch.eye(4) - torch.outer(a, a) / (a @ a))
        assert torch.allclose(X @ a, dW @ a, atol=TOL)
        assert X.norm() >= dW.norm() - TOL


def test_rank_one_update_bad_input():
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match="zero"):
        cx.rank_one_update(W, torch.ones(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="shape"):
        cx.rank_one_update(W, torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="size"):
        cx.rank_one_update(W, torch.ones(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="matrix"):
        cx.rank_one_update(torch.ones(5), torch.ones(2, 3), torch.ones(2, 3))


def test_zero_layer_output_is_a_clear_error():
    block = cx.make_block("softmax", CFG, seed=0)
    with torch.no_grad():
        block.layer.o.weight.zero_()
        block.layer.o.bias.zero_()  # A(x) = 0 for every query
    tokens, _ = prompts()
    with pytest.raises(ValueError, match="zero"):
        cx.implicit_patch(block, tokens, tokens[:, -1:])


def test_patch_needs_the_same_query():
    block = cx.make_block("softmax", CFG, seed=0)
    tokens, _ = prompts()
    other = prompts(seed=9)[0]
    with pytest.raises(ValueError, match="query"):
        cx.implicit_patch(block, tokens, other[:, -1:])


@pytest.mark.parametrize("kind", KINDS)
def test_theorem_full_and_partial_context(kind):
    block = cx.make_block(kind, CFG, seed=3)
    tokens, target = prompts(seed=4)
    th = cx.theorem_check(block, tokens, target)
    assert th["max_gap"] < TOL and th["rank_ratio"] < TOL
    assert abs(th["loss_ctx"] - th["loss_dw"]) < TOL
    pc = cx.partial_check(block, tokens, 5, runtime.generator(0))
    assert pc["max_gap"] < TOL
    assert pc["unpatched_gap"] > 1e-6  # removing Y mattered
    assert len(pc["removed"]) == 5


def test_partial_check_bad_size():
    block = cx.make_block("softmax", CFG, seed=3)
    tokens, _ = prompts()
    with pytest.raises(ValueError):
        cx.partial_check(block, tokens, 0, runtime.generator(0))
    with pytest.raises(ValueError):
        cx.partial_check(block, tokens, CFG.N + 1, runtime.generator(0))


@pytest.mark.parametrize("variant", ["skip", "preln"])
def test_appendix_a_bias_shift(variant):
    block = cx.make_block("softmax", CFG, variant, seed=5)
    tokens, _ = prompts(seed=6)
    r = cx.skip_check(block, tokens)
    assert r["max_gap"] < TOL
    assert r["control_minus_db"] < TOL  # dW alone misses exactly db'
    assert r["control_gap"] > 1e-3
    with pytest.raises(ValueError):
        cx.skip_check(cx.make_block("softmax", CFG, seed=5), tokens)


# --- Prop. 3.1 and Appendix B -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["softmax", "rnn", "ssm"])
def test_token_dynamics(kind):
    block = cx.make_block(kind, CFG, seed=7)
    tokens, _ = prompts(seed=8)
    r = cx.dynamics_check(block, tokens)
    for key in ("recursion_gap", "prop31_gap", "prefix_gap", "prefix_trick_gap", "appB_gap"):
        assert r[key] < 1e-11, key
    assert r["rank_ratio"] < TOL
    assert r["appB_vs_31_max_entry"] > 1e-6  # a different matrix ...
    assert bool((r["norm_31"] <= r["norm_B"] + TOL).all())  # ... and never a smaller one


def test_increments_equal_weight_differences():
    block = cx.make_block("softmax", CFG, seed=9)
    tokens, _ = prompts(seed=10)
    context, query = cx.split(tokens)
    pre = block.layer.prefixes(context, query)
    Ws = cx.prop31_weights(block.W.detach(), pre.detach())
    spectral = torch.linalg.matrix_norm(Ws[:, 1:] - Ws[:, :-1], ord=2)
    frob = torch.linalg.matrix_norm(Ws[:, 1:] - Ws[:, :-1])
    inc = cx.convergence_curve(block, tokens)
    assert torch.allclose(inc, spectral, atol=1e-10) and torch.allclose(inc, frob, atol=1e-10)


def test_loglog_slope():
    i = torch.arange(1, 51)
    assert abs(cx.loglog_slope(i, 3.0 / i) + 1) < 1e-12
    assert abs(cx.loglog_slope(i, torch.full((50,), 2.0))) < 1e-12


# --- fine-tuning comparison ----------------------------------------------------------------------


def test_finetune_comparison_shapes_and_identity():
    block = cx.make_block("softmax", CFG, seed=11)
    tokens, target = prompts(n=6, seed=12)
    r = cx.finetune_comparison(block, tokens, target, lr=0.1)
    for key in ("loss_dw", "loss_dw_patch", "loss_ft", "cosine"):
        assert r[key].shape == (6, CFG.N + 1)
    assert torch.allclose(r["loss_dw"], r["loss_dw_patch"], atol=1e-10)
    assert torch.allclose(r["loss_ft"][:, 0], r["loss_dw"][:, 0], atol=1e-12)  # both start at W
    assert bool(r["cosine"][:, 1:].abs().le(1 + 1e-12).all())


def test_finetune_first_step_is_one_sgd_step():
    """Step 1 of the explicit fine-tuning equals a hand-written SGD step on the MLP's W only."""
    block = cx.make_block("softmax", CFG, seed=13)
    tokens, target = prompts(n=1, seed=14)
    lr = 0.05
    W = block.W.detach().clone().requires_grad_(True)
    x0 = tokens[:, :1].clone()
    y0 = x0[0, 0, -1].clone()
    x0[..., -1] = 0.0
    u, z = block.mlp_input(x0)
    loss = 0.5 * (block.head(u, z, W=W)[0, -1] - y0) ** 2
    loss.backward()
    W1 = (W - lr * W.grad).detach()
    uq, zq = block.mlp_input(tokens[:, -1:])
    expected = (block.head(uq, zq, W=W1)[0, -1] - target[0]) ** 2
    r = cx.finetune_comparison(block, tokens, target, lr=lr)
    assert torch.allclose(r["loss_ft"][0, 1], expected.detach(), atol=1e-12)


# --- configs ---------------------------------------------------------------------------------------


def test_configs_cover_profiles():
    assert set(cx.CONFIGS) == set(runtime.PROFILES)
    assert cx.CONFIGS["smoke"].steps < cx.CONFIGS["book"].steps < cx.CONFIGS["paper"].steps
