"""Unit tests of iclbook.contextual: the identities of Dherin et al. (2025) in float64, the data,
the layers' fast paths against their definitions, shapes, and clear errors for bad input."""

from dataclasses import replace

import pytest
import torch

from iclbook import contextual as cx
from iclbook import runtime

TOL = 1e-12
CFG = replace(cx.CONFIGS["smoke"], N=12, width=16)
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


@pytest.mark.parametrize(
    "args", [dict(n_prompts=0, N=3, d=2), dict(n_prompts=2, N=-1, d=2), dict(n_prompts=2, N=3, d=0)]
)
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


@pytest.mark.parametrize(
    "kind,variant",
    [
        ("softmax", "plain"),
        ("rnn", "plain"),
        ("ssm", "plain"),
        ("softmax", "skip"),
        ("softmax", "preln"),
        ("ssm", "preln"),
    ],
)
def test_token_dynamics(kind, variant):
    block = cx.make_block(kind, CFG, variant, seed=7)
    if variant == "preln":  # a LayerNorm with non-trivial affine weights, as after training
        with torch.no_grad():
            for ln in (block.ln1, block.ln2):
                ln.weight.copy_(torch.tensor([0.7, 1.3, 0.9]))
                ln.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    tokens, _ = prompts(seed=8)
    r = cx.dynamics_check(block, tokens)
    for key in ("recursion_gap", "prop31_gap", "prefix_gap", "prefix_trick_gap", "appB_gap"):
        assert r[key] < 1e-11, key
    assert r["rank_ratio"] < TOL
    assert r["appB_vs_31_max_entry"] > 1e-6  # a different matrix ...
    assert bool((r["norm_31"] <= r["norm_B"] + TOL).all())  # ... and never a smaller one


def test_preln_step_is_fixed_by_the_layernorm_at_initialisation():
    """With LN2's weight 1 and bias 0, ||LN2(z)||^2 = n var / (var + eps): h = 1/3 for n = 3."""
    block = cx.make_block("softmax", CFG, "preln", seed=37)
    r = cx.dynamics_check(block, prompts(seed=38)[0])
    assert torch.allclose(r["step"], torch.full_like(r["step"], 1 / 3), rtol=1e-3)


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


# --- fine-tuning comparison ----------------------------------------------------------------------


def test_finetune_comparison_shapes_and_identity():
    block = cx.make_block("softmax", CFG, seed=11)
    tokens, target = prompts(n=6, seed=12)
    r = cx.finetune_comparison(block, tokens, target, lr=0.1)
    for key in ("loss_dw", "loss_dw_patch", "loss_ft", "pred_ft", "cosine"):
        assert r[key].shape == (6, CFG.N + 1)
    assert torch.allclose(r["loss_ft"], (r["pred_ft"] - target[:, None]) ** 2, atol=1e-12)
    assert torch.allclose(r["pred_ft"][:, 0], block(tokens[:, -1:]), atol=1e-12)  # W itself on the query
    assert torch.allclose(r["loss_dw"], r["loss_dw_patch"], atol=1e-10)
    assert torch.allclose(r["loss_ft"][:, 0], r["loss_dw"][:, 0], atol=1e-12)  # both start at W
    assert bool(r["cosine"][:, 1:].abs().le(1 + 1e-12).all())


def test_sgd_gradient_matches_autograd_and_prefix_inputs_their_definition():
    block = cx.make_block("softmax", CFG, seed=32)
    tokens, _ = prompts(n=4, seed=33)
    u = cx.query_inputs(block, tokens[:, :-1])[:, 2]  # (4, m)
    y = tokens[:, 2, -1]
    Ws = (block.W.detach() + 0.3 * torch.randn(2, 4, *block.W.shape, generator=runtime.generator(34))).requires_grad_(
        True
    )
    loss = 0.5 * ((block.head(u.expand(2, 4, -1), None, W=Ws)[..., -1] - y) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, Ws)
    assert torch.allclose(cx.sgd_gradient(block, Ws.detach(), u.expand(2, 4, -1), y), grad, atol=1e-12)
    pre = cx.prefix_inputs(block, tokens[:, :-1])
    for j in (0, 1, CFG.N - 1):
        x = tokens[:, j].clone()
        x[:, -1] = 0.0
        assert torch.allclose(pre[:, j], block.mlp_input(cx.join(tokens[:, :j], x))[0], atol=TOL)
    assert torch.allclose(pre[:, 0], cx.query_inputs(block, tokens[:, :-1])[:, 0], atol=TOL)  # no example before
    r = cx.finetune_comparison(block, tokens, tokens[:, 0, 0], lr=0.1, prompts="prefix")
    assert r["loss_ft"].shape == (4, CFG.N + 1)
    with pytest.raises(ValueError, match="prompts"):
        cx.finetune_comparison(block, tokens, tokens[:, 0, 0], lr=0.1, prompts="both")


def test_refine_setting_searches_the_neighbours():
    block = cx.make_block("softmax", CFG, seed=35)
    tokens, target = prompts(n=6, seed=36)

    def final(lr, k):
        return cx.finetune_comparison(block, tokens, target, lr=lr, steps_per_example=k)["loss_ft"][:, -1]

    start = {(0.1, 1): final(0.1, 1)}
    best, tried, interior = cx.refine_setting(block, tokens, target, start, max_steps=3, max_rounds=1)
    assert {(0.1, 1), (0.1, 3), (0.1 / 3, 3)} <= set(tried) and len(tried) == 4
    assert torch.allclose(tried[(0.1, 3)], final(0.1, 3), atol=1e-12)
    assert best in tried and isinstance(interior, bool)
    # nothing beyond max_steps: only the larger rate is a new neighbour, and the choice is not interior
    _, capped, interior = cx.refine_setting(block, tokens, target, start, max_steps=1, max_rounds=1)
    assert len(capped) == 2 and not interior
    with pytest.raises(ValueError, match="at least one"):
        cx.refine_setting(block, tokens, target, {}, max_steps=3)


def test_repeated_sgd_steps_equal_the_step_by_step_loop():
    block = cx.make_block("softmax", CFG, seed=42)
    tokens, _ = prompts(n=3, seed=43)
    u, y = cx.query_inputs(block, tokens[:, :-1])[:, 4], tokens[:, 4, -1]
    rate = torch.tensor([0.3, 1.0, 3.0])[:, None, None]  # (L, 1, 1): three rates at once
    W0 = block.W.detach().expand(3, 3, *block.W.shape)
    W = W0.clone()
    for _ in range(7):
        W = W - rate.unsqueeze(-1) * cx.sgd_gradient(block, W, u.expand(3, 3, -1), y)
    fused = W0 - cx.repeated_sgd_steps(block, W0, u.expand(3, 3, -1), y, rate, 7)
    assert torch.allclose(fused, W, atol=1e-11)


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


# --- numerical robustness: stable prefixes, tiny and zero norms, clear errors --------------------


@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float64, 1.0), (torch.float64, 20.0), (torch.float64, 50.0), (torch.float32, 8.0), (torch.float32, 20.0)],
)
@pytest.mark.parametrize("window", [None, 5])
def test_softmax_prefixes_stable_at_large_scales(dtype, scale, window):
    """Each prefix is normalised by its own maximum: no 0/0 where one early score is far below
    a later one (the old single-shift version gave NaN at scale 20 in float64, 8 in float32)."""
    torch.manual_seed(3)
    layer = cx.SoftmaxAttention(3, heads=2, d_k=4, window=window).to(dtype)
    tokens, _ = cx.sample_prompts(4, N=60, d=2, generator=runtime.generator(4), dtype=dtype)
    tokens = tokens * scale
    context, query = cx.split(tokens)
    pre = layer.prefixes(context, query)
    direct = torch.stack([layer(cx.join(context[:, :i], query)) for i in range(61)], 1)
    assert bool(torch.isfinite(pre).all())
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    assert float(((pre - direct).abs() / (1 + direct.abs())).max().detach()) < tol


@pytest.mark.parametrize("kind", KINDS)
def test_causal_pass_matches_prefix_runs(kind):
    block = cx.make_block(kind, CFG, seed=21)
    tokens, _ = prompts(n=3, seed=22)
    causal = block.layer.causal(tokens)
    direct = torch.stack([block.layer(tokens[:, : t + 1]) for t in range(tokens.shape[1])], 1)
    assert torch.allclose(causal, direct, atol=TOL)


@pytest.mark.parametrize("variant", ["plain", "skip", "preln"])
def test_theorem_at_every_position(variant):
    block = cx.make_block("softmax", CFG, variant, seed=23)
    r = cx.position_check(block, prompts(n=4, seed=24)[0])
    assert r["max_gap"] < TOL and r["causal_vs_forward"] < TOL
    assert r["unpatched_gap"] > 1e-3 and r["positions"] == CFG.N + 1


@pytest.mark.parametrize("window", [None, 4])
def test_attention_matches_pytorch_sdpa(window):
    torch.manual_seed(5)
    layer = cx.SoftmaxAttention(3, heads=4, d_k=4, window=window)
    gaps = cx.attention_reference_gap(layer, prompts(n=5, seed=25)[0])
    assert max(gaps.values()) < TOL
    with pytest.raises(TypeError, match="SoftmaxAttention"):
        cx.attention_reference_gap(cx.LinearAttention(3), prompts(n=1)[0])


def test_tiny_and_huge_norms_stay_exact():
    torch.manual_seed(6)
    W = torch.randn(5, 3)
    for scale in (1e-160, 1.0, 1e150):
        a_red, a_full = torch.randn(4, 3) * scale, torch.randn(4, 3) * scale
        dW = cx.rank_one_update(W, a_full, a_red)
        lhs, rhs = torch.einsum("bhm,bm->bh", W + dW, a_red), a_full @ W.T
        assert bool(torch.isfinite(dW).all())
        assert float(((lhs - rhs).abs() / rhs.abs().amax()).max()) < 1e-12, scale


def test_zero_query_output_is_a_clear_error_everywhere():
    W = torch.randn(5, 3)
    pre = torch.randn(2, 4, 3)
    pre[1, 0] = 0.0  # A(x) = 0 for prompt 1
    for fn in (cx.prop31_weights, cx.prop31_recursion, cx.update_increments):
        with pytest.raises(ValueError, match="zero"):
            fn(W, pre)
    with pytest.raises(ValueError, match="zero"):
        cx.prop31_recursion(W, pre, gradient="autograd")
    suf = torch.randn(2, 4, 3)
    suf[0, 2] = 0.0
    with pytest.raises(ValueError, match="zero"):
        cx.appendix_b_weights(W, suf)
    pre[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        cx.prop31_weights(W, pre)
    with pytest.raises(ValueError, match="'closed' or 'autograd'"):
        cx.prop31_recursion(W, torch.randn(2, 4, 3), gradient="numeric")


def test_prop31_recursion_tiny_scale_and_autograd():
    torch.manual_seed(7)
    W = torch.randn(5, 3)
    pre = torch.randn(2, 6, 3)
    closed = cx.prop31_weights(W, pre)
    assert torch.allclose(cx.prop31_recursion(W, pre), closed, atol=TOL)
    assert torch.allclose(cx.prop31_recursion(W, pre, gradient="autograd"), closed, atol=TOL)
    tiny = cx.prop31_recursion(W, pre * 1e-160)  # h = 1/||A(x)||^2 would overflow
    assert torch.allclose(tiny, closed, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="over- or underflows"):
        cx.prop31_recursion(W, pre * 1e-160, gradient="autograd")
    inc = cx.update_increments(W, pre * 1e-160)
    assert torch.allclose(inc, cx.update_increments(W, pre), rtol=1e-12)


def test_block_rejects_bad_shapes_clearly():
    block = cx.make_block("softmax", CFG, seed=8)
    tokens, _ = prompts(n=2)
    with pytest.raises(ValueError, match="add a batch dimension"):
        block(tokens[0])
    with pytest.raises(ValueError, match=r"\(batch, tokens, 3\)"):
        block(tokens.unsqueeze(0))
    with pytest.raises(ValueError, match="tokens >= 1"):
        block(tokens[..., :2])
    with pytest.raises(TypeError, match="tensor"):
        block([[0.0, 0.0, 0.0]])


# --- stacked blocks, linear attention as gradient descent ------------------------------------


@pytest.mark.parametrize("depth,variant", [(2, "plain"), (3, "plain"), (2, "skip"), (2, "preln")])
def test_stacked_blocks_one_patch_per_block(depth, variant):
    stack = cx.make_stack("softmax", CFG, depth, variant, seed=9)
    tokens, target = prompts(n=4, seed=26)
    r = cx.stack_check(stack, tokens, target)
    assert r["max_gap"] < TOL and r["rank_ratio"] < 1e-10 and len(r["patch_norms"]) == depth
    assert abs(r["loss_ctx"] - r["loss_query_only"]) > 1e-6  # the context matters


def test_stack_bad_arguments():
    with pytest.raises(ValueError, match="at least one block"):
        cx.BlockStack([])
    with pytest.raises(ValueError, match="depth"):
        cx.make_stack("softmax", CFG, 0, seed=1)
    stack = cx.make_stack("softmax", CFG, 2, seed=1)
    with pytest.raises(ValueError, match="2 blocks but 1 patches"):
        cx.stack_patched_output(stack, prompts(n=1)[0][:, -1:], [None])


def test_linear_attention_dual_form_and_gd_step():
    torch.manual_seed(10)
    tokens, _ = prompts(n=6, seed=27)
    assert cx.linear_dual_gap(cx.LinearAttention(3, heads=2, d_k=3), tokens) < TOL
    gd = cx.gd_linear_attention(2, eta=0.05)
    assert cx.gd_step_gap(gd, tokens, eta=0.05) < TOL
    # in a block, the rank-1 patch moves the GD step's effect into the MLP's weight exactly
    block = cx.ContextualBlock(gd, width=8)
    r = cx.theorem_check(block, tokens, tokens[:, -1, -1])
    assert r["max_gap"] < TOL


# --- finetuning, transfer, tasks ---------------------------------------------------------------


def test_finetune_sweep_matches_single_runs():
    block = cx.make_block("softmax", CFG, seed=11)
    tokens, target = prompts(n=4, seed=12)
    both = cx.finetune_comparison(block, tokens, target, lr=[0.1, 0.5], steps_per_example=2)
    assert both["loss_ft"].shape == (2, 4, CFG.N + 1) and both["W_ft"].shape == (2, 4, CFG.width, 3)
    for k, lr in enumerate([0.1, 0.5]):
        one = cx.finetune_comparison(block, tokens, target, lr=lr, steps_per_example=2)
        assert torch.allclose(one["loss_ft"], both["loss_ft"][k], atol=TOL)
    with pytest.raises(ValueError, match="positive"):
        cx.finetune_comparison(block, tokens, target, lr=[0.1, -1.0])
    with pytest.raises(ValueError, match="steps_per_example"):
        cx.finetune_comparison(block, tokens, target, lr=0.1, steps_per_example=0)


def test_half_drop_index():
    # start-referenced: half of the starting value; a curve that removes < 50% never gets there
    assert cx.half_drop_index(torch.tensor([4.0, 3.0, 2.0, 1.0]), reference="start") == 2
    assert cx.half_drop_index(torch.tensor([4.0, 3.5, 3.0]), reference="start") is None
    # normalised: half of the curve's own drop, so a shallow curve of the same shape scores the same
    assert cx.half_drop_index(torch.tensor([4.0, 3.0, 2.0, 1.0])) == 2  # level 2.5
    assert cx.half_drop_index(torch.tensor([4.0, 3.5, 3.0])) == 1  # level 3.5
    assert cx.half_drop_index(torch.tensor([4.0, 3.9, 3.2, 3.1, 3.0])) == 2  # level 3.5
    assert cx.half_drop_index(torch.tensor([2.0, 2.5, 3.0])) is None  # rises: no drop to halve
    with pytest.raises(ValueError, match="reference"):
        cx.half_drop_index(torch.tensor([2.0, 1.0]), reference="end")
    with pytest.raises(ValueError, match="one loss curve"):
        cx.half_drop_index(torch.ones(2, 3))


def test_finetune_to_convergence_fits_the_context():
    """The W-only fit converges to the tolerance, its training loss is the block's own loss on the
    examples with the returned W, and a one-step run is worse."""
    block = cx.make_block("softmax", CFG, seed=14)
    tokens, target = prompts(n=3, seed=15)
    r = cx.finetune_to_convergence(block, tokens, target, max_iters=200, tol=1e-10)
    assert bool(r["converged"].all()) and bool((r["train"] <= 1e-10).all()) and r["iterations"] <= 200
    u = cx.query_inputs(block, tokens[:, :-1])
    assert u.shape == (3, CFG.N, 3)
    with torch.no_grad():
        own = ((block.head(u, None, W=r["W"].unsqueeze(1))[..., -1] - tokens[:, :-1, -1]) ** 2).mean(1)
        start = ((block.head(u, None)[..., -1] - tokens[:, :-1, -1]) ** 2).mean(1)
        test = (block.head(block.mlp_input(tokens[:, -1:])[0], None, W=r["W"])[..., -1] - target) ** 2
    assert torch.allclose(own, r["train"], rtol=1e-6, atol=1e-14)
    assert torch.allclose(start, r["train_start"], atol=1e-12)
    assert torch.allclose(test, r["test"], atol=1e-12)
    short = cx.finetune_to_convergence(block, tokens, target, max_iters=1, tol=1e-10)
    assert short["iterations"] == 1 and not bool(short["converged"].any())
    assert bool((r["train"] < short["train"]).all()) and bool((short["train"] < short["train_start"]).all())
    assert torch.allclose(r["test_start"], short["test_start"])
    with pytest.raises(ValueError, match="max_iters"):
        cx.finetune_to_convergence(block, tokens, target, max_iters=0, tol=1e-10)


def test_patch_transfer_own_query_is_the_context():
    block = cx.make_block("softmax", CFG, seed=16)
    tokens, target, w = cx.sample_tasks(5, N=CFG.N, d=CFG.d, generator=runtime.generator(17))
    r = cx.patch_transfer(block, tokens, target, w, 3, runtime.generator(18), W_other=block.W.expand(5, -1, -1))
    assert torch.allclose(r["own_query"], (block(tokens) - target) ** 2, atol=TOL)
    assert torch.allclose(r["other"], r["unpatched"], atol=TOL)  # W itself: no update
    assert all(v.shape == (5,) for v in r.values())
    # named weights, and the random rank-1 null: the same fresh queries, one draw of each per column
    both = cx.patch_transfer(
        block,
        tokens,
        target,
        w,
        3,
        runtime.generator(18),
        W_other={"same": block.W.expand(5, -1, -1)},
        n_random=4,
        random_generator=runtime.generator(19),
    )
    assert torch.allclose(both["same"], r["unpatched"], atol=TOL) and torch.allclose(both["patched"], r["patched"])
    assert both["random_draws"].shape == (5, 4) and torch.allclose(both["random"], both["random_draws"].mean(1))
    assert not torch.allclose(both["random"], both["patched"])
    with pytest.raises(ValueError, match="random_generator"):
        cx.patch_transfer(block, tokens, target, w, 3, runtime.generator(18), n_random=2)


def test_static_patch_one_query_is_theorem_22_and_solves_its_equations():
    block = cx.make_block("softmax", CFG, seed=21).requires_grad_(False)
    tokens, _ = prompts(n=4, seed=22)
    u_full, _ = block.mlp_input(tokens)
    u_x, _ = block.mlp_input(tokens[:, -1:])
    one = cx.static_patch(block.W, u_full.unsqueeze(1), u_x.unsqueeze(1))
    assert torch.allclose(one, cx.rank_one_update(block.W, u_full, u_x), atol=TOL)
    # K <= m generic queries: every equation dW A(x_k) = W dA_k holds exactly, and the rank is K
    a_full, a_x = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    dW = cx.static_patch(block.W, a_full, a_x)
    assert torch.allclose(
        torch.einsum("bhm,bkm->bkh", dW, a_x), torch.einsum("hm,bkm->bkh", block.W, a_full - a_x), atol=1e-10
    )
    assert float(torch.linalg.svdvals(dW)[:, 2].max()) < 1e-10 < float(torch.linalg.svdvals(dW)[:, 1].min())
    # K > m: least squares, so the normal equations hold
    a_full, a_x = torch.randn(4, 7, 3, dtype=torch.float64), torch.randn(4, 7, 3, dtype=torch.float64)
    dW = cx.static_patch(block.W, a_full, a_x)
    resid = torch.einsum("bhm,bkm->bhk", dW, a_x) - torch.einsum("hm,bkm->bhk", block.W, a_full - a_x)
    assert float((resid @ a_x).abs().max()) < 1e-9
    with pytest.raises(ValueError, match="zero"):
        cx.static_patch(block.W, a_full, torch.zeros_like(a_x))
    with pytest.raises(ValueError, match="one shape"):
        cx.static_patch(block.W, a_full, a_x[:, :3])


def test_static_patch_transfer_reproduces_the_context_on_its_calibration_queries():
    block = cx.make_block("softmax", CFG, seed=23)
    tokens, _, w = cx.sample_tasks(5, N=CFG.N, d=CFG.d, generator=runtime.generator(24))
    r = cx.static_patch_transfer(block, tokens, w, (1, 3, 6), 4, runtime.generator(25))
    assert all(v.shape == (5,) for v in r.values())
    assert {"static_1", "static_3", "static_6", "foreign_6", "calibration_3", "unpatched", "in_context"} <= set(r)
    # K = 1: on its one calibration query the patch is Theorem 2.2, i.e. the context itself
    queries, qt = cx.with_queries(tokens, w, 6 + 4, runtime.generator(25))
    x1 = cx.join(tokens[:, :-1], queries[:, 0])
    assert torch.allclose(r["calibration_1"], (block(x1) - qt[:, 0]) ** 2, atol=1e-10)
    # and the in-context reference is the block reading the context before each fresh query
    fresh = torch.stack([(block(cx.join(tokens[:, :-1], queries[:, k])) - qt[:, k]) ** 2 for k in range(6, 10)], 1)
    assert torch.allclose(r["in_context"], fresh.mean(1), atol=1e-10)
    with pytest.raises(ValueError, match="K >= 1"):
        cx.static_patch_transfer(block, tokens, w, (0,), 4, runtime.generator(25))


def test_sgd_alignment_against_autograd():
    block = cx.make_block("softmax", CFG, seed=26)
    tokens, _ = prompts(n=3, seed=27)
    r = cx.sgd_alignment(block, tokens)
    assert r["cosine"].shape == r["foreign"].shape == (3,)
    u = cx.query_inputs(block, tokens[:, :-1])
    for b, c in ((0, 0), (1, 1), (0, 1)):  # (task of dW, task of the step): (0, 1) is the null
        W = block.W.detach().clone().requires_grad_(True)
        loss = 0.5 * ((block.head(u[c], None, W=W)[..., -1] - tokens[c, :-1, -1]) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, W)
        with torch.no_grad():
            dW = cx.implicit_patch(block, tokens[b : b + 1], tokens[b : b + 1, -1:]).dW[0]
        cos = float(-(grad * dW).sum() / (grad.norm() * dW.norm()))
        assert abs(cos - float(r["cosine" if b == c else "foreign"][b])) < 1e-10
    with pytest.raises(ValueError, match="two tasks"):
        cx.sgd_alignment(block, tokens[:1])


def test_bad_tokens_give_clear_errors():
    block = cx.make_block("softmax", CFG, seed=28)
    tokens, _ = prompts(n=2, seed=29)
    bad = tokens.clone()
    bad[1, 3, 0] = float("nan")
    for run in (lambda t: cx.theorem_check(block, t, t[:, -1, 0]), lambda t: cx.dynamics_check(block, t)):
        with pytest.raises(ValueError, match="non-finite"):
            run(bad)
    with pytest.raises(ValueError, match="4-D .*flatten"):
        block(tokens.unsqueeze(0))
    with pytest.raises(ValueError, match="add a batch dimension"):
        block(tokens[0])


def test_float32_patch_warns_once():
    import iclbook.contextual.patches as patches

    patches._WARNED_DTYPES.discard(torch.float32)
    block = cx.make_block("softmax", CFG, seed=30, dtype=torch.float32)
    tokens, target = cx.sample_prompts(4, N=CFG.N, d=CFG.d, generator=runtime.generator(31), dtype=torch.float32)
    with pytest.warns(UserWarning, match="float32"):
        r = cx.theorem_check(block, tokens, target)
    assert r["max_gap"] < 1e-5  # exact up to float32 rounding
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second patch in float32 does not warn again
        cx.theorem_check(block, tokens, target)


def test_foreign_contexts_keep_the_query():
    tokens, target = prompts(n=4, seed=20)
    f = cx.foreign_contexts(tokens)
    assert torch.equal(f[:, -1], tokens[:, -1]) and torch.equal(f[:, :-1], tokens[[1, 2, 3, 0], :-1])
    with pytest.raises(ValueError, match="shift"):
        cx.foreign_contexts(tokens[:1])


def test_sample_tasks_and_fresh_queries():
    t1, y1 = cx.sample_prompts(4, N=5, d=2, generator=runtime.generator(3))
    t2, y2, w = cx.sample_tasks(4, N=5, d=2, generator=runtime.generator(3))
    assert torch.equal(t1, t2) and torch.equal(y1, y2)
    q, qt = cx.with_queries(t2, w, 6, runtime.generator(4))
    assert q.shape == (4, 6, 3) and bool((q[..., -1] == 0).all())
    assert torch.allclose(qt, torch.einsum("bqd,bd->bq", q[..., :2], w))
    with pytest.raises(ValueError, match="w must be"):
        cx.with_queries(t2, w[:, :1], 2, runtime.generator(4))


def test_train_blocks_cache_key_tells_runs_apart(monkeypatch, tmp_path):
    """A second identical call loads the weights; a different validation set, step count,
    variant or seed trains anew (the key holds each of them)."""
    monkeypatch.setenv("ICLBOOK_CACHE", str(tmp_path))
    val = cx.sample_prompts(8, N=CFG.N, d=CFG.d, generator=torch.Generator().manual_seed(0))
    first, h1 = cx.train_blocks(CFG, [0], steps=3, lr=CFG.lr, val=val)
    again, h2 = cx.train_blocks(CFG, [0], steps=3, lr=CFG.lr, val=val)
    assert not h1["cached"] and h2["cached"]
    assert all(torch.equal(a, b) for a, b in zip(first[0].state_dict().values(), again[0].state_dict().values()))
    other_val = cx.sample_prompts(8, N=CFG.N, d=CFG.d, generator=torch.Generator().manual_seed(1))
    for kwargs in (
        {"steps": 3, "val": other_val},
        {"steps": 4, "val": val},
        {"steps": 3, "val": val, "variant": "skip"},
    ):
        assert not cx.train_blocks(CFG, [0], lr=CFG.lr, **kwargs)[1]["cached"], kwargs
    assert not cx.train_blocks(CFG, [1], steps=3, lr=CFG.lr, val=val)[1]["cached"]
    assert len(list(tmp_path.glob("04-*.pt"))) == 5
    # a threshold or a measurement's size (check fields) loads the same weights: nothing retrains
    moved = replace(CFG, icl_ratio=0.99, ft_lrs=(5.0,), n_ft_tasks=7)
    assert cx.train_blocks(moved, [0], steps=3, lr=CFG.lr, val=val)[1]["cached"]
    assert not cx.train_blocks(replace(CFG, width=CFG.width + 1), [0], steps=3, lr=CFG.lr, val=val)[1]["cached"]


# --- the blocks of modern language models (Goldwaser et al. 2025) -----------------------------------


@pytest.mark.parametrize("kind,act", [("gemma", "gelu"), ("gemma", "silu"), ("postnorm", "gelu"), ("parallel", "gelu")])
def test_modern_blocks_patch_exactly(kind, act):
    from iclbook.contextual import modern

    block = cx.make_modern(kind, CFG, seed=40, act=act)
    tokens, _ = prompts(n=16, seed=41)
    r = cx.modern_check(block, tokens)
    assert r["max_gap"] < 1e-10 and r["rank_ratio"] < 1e-12 and r["context_effect"] > 1e-3
    patch = cx.modern_patch(block, tokens)
    if kind == "gemma":  # rank-1 gate and up patches, a scale patch, no bias
        assert patch.dW.shape == patch.dW_up.shape == (16, CFG.width, 3) and patch.scale.shape == (16, 3)
        assert patch.db is None
        # the RMSNorm alone: v / rms(v) * (1 + g), Gemma's form
        v = torch.randn(4, 3, dtype=torch.float64)
        norm = block.norms[0]
        assert torch.allclose(norm(v), v / (v.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * (1 + norm.weight))
    elif kind == "parallel":  # the MLP reads the query alone: a bias shift is the whole patch
        assert patch.dW is None and patch.db.shape == (16, 3)
    with pytest.raises(ValueError, match="batch, tokens"):
        block(tokens[0])
    assert kind in modern.KINDS


def test_modern_block_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        cx.ModernBlock("prenorm", 3, 8, 2, 2)
    with pytest.raises(ValueError, match="act"):
        cx.ModernBlock("gemma", 3, 8, 2, 2, act="relu")
