"""The measurements of chapter 4, as functions that return numbers (the chapter draws the figures).

Each takes trained or untrained blocks and prompts and returns a dict of floats or tensors:
the paper's identities (Theorem 2.2, App. A, Prop. 3.1, App. B) checked on real inputs, the
checks of our own implementation against independent ones (PyTorch's fused attention, autograd,
chapter 2's dual form), and the measurements that could come out either way (finetuning against
the implicit update, whether a query's patch transfers to other queries, the decay of the
implicit updates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from iclbook.contextual.data import join, split, with_queries
from iclbook.contextual.layers import LinearAttention, SoftmaxAttention
from iclbook.contextual.model import BlockStack, ContextualBlock
from iclbook.contextual.patches import (
    appendix_b_weights,
    implicit_patch,
    patched_output,
    prop31_recursion,
    prop31_weights,
    rank_one_update,
    rank_ratio,
    stack_patched_output,
    stack_patches,
    static_patch,
    update_increments,
)


@torch.no_grad()
def theorem_check(block: ContextualBlock, tokens: torch.Tensor, target: torch.Tensor) -> dict:
    """Theorem 2.2 with ``Y = C`` on a batch: the prompt's prediction against the query alone
    with ``W + dW``. Returns the two losses, the largest prediction gap and the largest
    ``sigma_2/sigma_1`` of the patches."""
    query_only = tokens[:, -1:]
    patch = implicit_patch(block, tokens, query_only)
    y_ctx = block(tokens)
    y_dw = patched_output(block, query_only, patch)[:, -1]
    return {
        "loss_ctx": float(((y_ctx - target) ** 2).mean()),
        "loss_dw": float(((y_dw - target) ** 2).mean()),
        "loss_query_only": float(((block(query_only) - target) ** 2).mean()),
        "max_gap": float((y_ctx - y_dw).abs().max()),
        "rank_ratio": float(rank_ratio(patch.dW).max()),
    }


@torch.no_grad()
def partial_check(block: ContextualBlock, tokens: torch.Tensor, n_removed: int, generator: torch.Generator) -> dict:
    """Theorem 2.2 with ``Y`` a random subset of ``n_removed`` context tokens (order kept):
    ``T_W(C, x)`` against ``T_{W + dW(Y)}(C \\ Y, x)``."""
    N = tokens.shape[1] - 1
    if not 0 < n_removed <= N:
        raise ValueError(f"need 0 < |Y| <= N = {N}, got {n_removed}")
    removed = torch.randperm(N, generator=generator)[:n_removed]
    keep = torch.ones(N + 1, dtype=torch.bool)
    keep[removed] = False
    reduced = tokens[:, keep]
    patch = implicit_patch(block, tokens, reduced)
    full = block.head(*block.mlp_input(tokens))
    return {
        "max_gap": float((full - patched_output(block, reduced, patch)).abs().max()),
        "unpatched_gap": float((full - block.head(*block.mlp_input(reduced))).abs().max()),
        "rank_ratio": float(rank_ratio(patch.dW).max()),
        "removed": sorted(removed.tolist()),
    }


@torch.no_grad()
def skip_check(block: ContextualBlock, tokens: torch.Tensor) -> dict:
    """App. A on a skip or pre-LN block: ``dW`` with ``db' = dA`` is exact; ``dW`` alone misses
    exactly ``dA`` (the negative control), which is checked too."""
    if block.variant == "plain":
        raise ValueError("skip_check needs a block with skip connections")
    query_only = tokens[:, -1:]
    patch = implicit_patch(block, tokens, query_only)
    full = block.head(*block.mlp_input(tokens))
    control = patched_output(block, query_only, patch, use_bias=False)
    return {
        "max_gap": float((full - patched_output(block, query_only, patch)).abs().max()),
        "control_gap": float((full - control).abs().max()),
        "control_mean_gap": float((full - control)[:, -1].abs().mean()),
        # the control misses exactly the bias shift: full - control == db
        "control_minus_db": float(((full - control) - patch.db).abs().max()),
        "mean_abs_db": float(patch.db[:, -1].abs().mean()),
    }


@torch.no_grad()
def dynamics_check(block: ContextualBlock, tokens: torch.Tensor) -> dict:
    """Prop. 3.1 (token-by-token gradient steps) and App. B (product form) on a block of any
    variant. With skips (App. A) the MLP's input is ``u`` (``A``, or ``LN2(z)`` in the pre-LN
    block) and each patch carries the bias shift ``db'_i = z_i - z_0`` of its prefix; App. B's
    product acts on ``W`` and the whole context's ``db' = z_C - z_x``. ``"step"`` is Prop. 3.1's
    implicit step ``h = 1/||u(x)||^2`` per prompt ``(B,)``."""
    context, query = split(tokens)
    W0 = block.W
    pre, z_pre = block.mlp_input_prefixes(context, query)  # (B, N + 1, m), (B, N + 1, d)
    closed = prop31_weights(W0, pre)
    recursive = prop31_recursion(W0, pre)
    by_autograd = prop31_recursion(W0, pre, gradient="autograd")
    WN = closed[:, -1]
    u0, z0 = block.mlp_input(query.unsqueeze(1))
    skip = block.variant != "plain"
    shift = (z_pre - z_pre[:, :1]) if skip else None  # db'_i of each prefix
    full = block.head(*block.mlp_input(tokens))
    y_31 = block.head(u0, z0, W=WN, bias_shift=shift[:, -1] if skip else None)
    # each prefix too: T_{W_i, b'_i}(x) == T_W(c_1..c_i, x)
    y_prefix_ctx = block.head(pre, z_pre)
    y_prefix_31 = block.head(
        u0.unsqueeze(1).expand_as(pre), z0.unsqueeze(1).expand_as(z_pre), W=closed, bias_shift=shift
    )
    suf, z_suf = block.mlp_input_suffixes(context, query)
    WB = appendix_b_weights(W0, suf)
    y_B = block.head(u0, z0, W=WB, bias_shift=(z_suf[:, 0] - z_suf[:, -1]) if skip else None)
    idx = [0, 1, context.shape[1] // 2]
    direct = [block.mlp_input(join(context[:, :i], query)) for i in idx]
    direct_prefix = torch.stack([d[0] for d in direct], 1)
    direct_z = torch.stack([d[1] for d in direct], 1)
    return {
        "recursion_gap": float((closed - recursive).abs().max()),
        "autograd_gap": float((closed - by_autograd).abs().max()),
        "prop31_gap": float((full - y_31).abs().max()),
        "prefix_gap": float((y_prefix_ctx - y_prefix_31).abs().max()),
        "prefix_trick_gap": float(
            max((direct_prefix - pre[:, idx]).abs().max(), (direct_z - z_pre[:, idx]).abs().max())
        ),
        "rank_ratio": float(rank_ratio(WN - W0).max()),
        "appB_gap": float((full - y_B).abs().max()),
        "appB_vs_31_max_entry": float((WB - WN).abs().max()),
        "norm_31": (WN - W0).flatten(1).norm(dim=1),
        "norm_B": (WB - W0).flatten(1).norm(dim=1),
        "appB_rank": torch.linalg.matrix_rank(WB - W0, rtol=1e-10),
        "step": 1.0 / (u0 * u0).sum(-1),
    }


@torch.no_grad()
def convergence_curve(block: ContextualBlock, tokens: torch.Tensor) -> torch.Tensor:
    """``||dW_{i+1} - dW_i||_2`` for ``i = 0..N-1`` per prompt, ``(B, N)``: the paper's Fig. 2."""
    if block.variant != "plain":
        raise ValueError("convergence_curve is written for the plain block")
    context, query = split(tokens)
    return update_increments(block.W, block.layer.prefixes(context, query))


def finetune_comparison(
    block: ContextualBlock,
    tokens: torch.Tensor,
    target: torch.Tensor,
    lr: float | Sequence[float],
    steps_per_example: int = 1,
    prompts: str = "query",
) -> dict:
    """The paper's Fig. 3: implicit ``dW`` against explicit finetuning, per prompt and example.

    *Implicit:* the test loss of ``T_W(c_1..c_i, x_q)`` (equal to ``T_{W + dW(c_1..c_i)}(x_q)``).
    *Explicit:* from ``W``, for each context example in order, ``steps_per_example`` plain SGD
    steps (rate ``lr``) on ``(T_W(p_j) - y_j)^2 / 2`` with only ``W`` trainable, each task
    separately; after ``i`` examples, the test loss on ``x_q``. The prompt ``p_j`` of example
    ``j`` is one of two readings of the paper's "one example at a time": ``prompts="query"``,
    the example's input alone ``[x_j; 0]``; ``prompts="prefix"``, the examples before it then its
    input, ``[c_1..c_{j-1}, [x_j; 0]]``. Also the cosine (normalised Frobenius inner product)
    between the two updates ``W_i^ft - W`` and ``dW(c_1..c_i)``. The SGD gradient is computed in
    closed form (:func:`sgd_gradient`), which a test checks against autograd.

    ``lr`` may be a list: every rate runs at once. Returns ``loss_dw`` and ``loss_dw_patch``
    ``(B, N + 1)`` for ``i = 0..N``, and ``loss_ft``, the finetuned predictions on the query
    ``pred_ft`` and ``cosine`` ``(L, B, N + 1)``, and the final weights ``W_ft`` ``(L, B, h, m)``
    (the ``L`` dimension dropped for a single ``lr``).
    ``cosine[..., 0]`` is NaN: both updates are zero.
    """
    if block.variant != "plain":
        raise ValueError("finetune_comparison is written for the plain block")
    if steps_per_example < 1:
        raise ValueError(f"steps_per_example must be >= 1, got {steps_per_example}")
    if prompts not in ("query", "prefix"):
        raise ValueError(f"prompts must be 'query' or 'prefix', got {prompts!r}")
    single = isinstance(lr, (int, float))
    lrs = torch.tensor([lr] if single else list(lr), dtype=tokens.dtype)
    if not bool((lrs > 0).all()):
        raise ValueError(f"learning rates must be positive, got {lrs.tolist()}")
    context, query = split(tokens)
    B, N, _ = context.shape
    L = len(lrs)
    W0 = block.W.detach()
    with torch.no_grad():
        pre = block.layer.prefixes(context, query)
        dWs = prop31_weights(W0, pre) - W0  # (B, N + 1, h, m)
        u0 = block.mlp_input(query.unsqueeze(1))[0].expand(L, B, -1)
        loss_dw = (block.head(pre, None)[..., -1] - target[:, None]) ** 2
        # the same losses through the patch, to show they coincide
        loss_dw_patch = (
            block.head(u0[0].unsqueeze(1).expand_as(pre), None, W=W0 + dWs)[..., -1] - target[:, None]
        ) ** 2
        # (B, N, m): the MLP inputs of the finetuning prompts (they do not depend on W)
        u_ft = query_inputs(block, context) if prompts == "query" else prefix_inputs(block, context)
    W = W0.expand(L, B, *W0.shape).clone()
    rate = lrs[:, None, None, None]
    pred_ft, cos = [], []
    for i in range(N + 1):
        with torch.no_grad():
            pred_ft.append(block.head(u0, None, W=W)[..., -1])
            a, b = (W - W0).flatten(2), dWs[:, i].flatten(1).unsqueeze(0)
            cos.append((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))
        if i == N:
            break
        u, y = u_ft[:, i].expand(L, B, -1), context[:, i, -1]
        if steps_per_example == 1:
            W = W - rate * sgd_gradient(block, W, u, y)
        else:  # the same steps, run on the pre-activation (see repeated_sgd_steps)
            W = W - repeated_sgd_steps(block, W, u, y, rate[..., 0], steps_per_example)
    pred = torch.stack(pred_ft, -1)
    out = {
        "loss_dw": loss_dw,
        "loss_dw_patch": loss_dw_patch,
        "loss_ft": (pred - target[:, None]) ** 2,
        "pred_ft": pred,
        "cosine": torch.stack(cos, -1),
        "W_ft": W,
    }
    if single:
        for key in ("loss_ft", "pred_ft", "cosine", "W_ft"):
            out[key] = out[key][0]
    return out


@torch.no_grad()
def sgd_gradient(block: ContextualBlock, W: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of ``(T_W(u) - y)^2 / 2`` with respect to ``W``, for each of a batch of
    weights ``W`` ``(..., h, m)``, MLP inputs ``u`` ``(..., m)`` and labels ``y`` ``(...)``, in closed
    form: ``(pred - y) (a * gelu'(W u + b)) u^T`` with ``a`` the last row of the second dense layer
    (the prediction is the last output coordinate) and ``gelu'(x) = Phi(x) + x phi(x)``."""
    pre = torch.einsum("...hm,...m->...h", W, u) + block.fc1.bias
    pred = F.gelu(pre) @ block.fc2.weight[-1] + block.fc2.bias[-1]
    cdf = 0.5 * (1 + torch.erf(pre / 2**0.5))
    pdf = torch.exp(-0.5 * pre**2) / (2 * torch.pi) ** 0.5
    g = block.fc2.weight[-1] * (cdf + pre * pdf)  # d pred / d pre
    return ((pred - y).unsqueeze(-1) * g).unsqueeze(-1) * u.unsqueeze(-2)


@torch.no_grad()
def repeated_sgd_steps(
    block: ContextualBlock, W: torch.Tensor, u: torch.Tensor, y: torch.Tensor, rate: torch.Tensor, steps: int
) -> torch.Tensor:
    """The total change of ``W`` ``(..., h, m)`` made by ``steps`` SGD steps at ``rate`` ``(..., 1)`` on
    one example ``(u, y)`` (:func:`sgd_gradient`), returned to be subtracted from ``W``.

    Every step is ``rate r_t g_t u^T``, so the pre-activation moves by ``rate |u|^2 r_t g_t`` and
    the steps can run on the ``h`` entries of the pre-activation alone; the change of ``W`` is the
    sum of the ``rate r_t g_t``, times ``u^T``, formed once. Equal to the step-by-step loop up to
    rounding (a test compares them)."""
    a, b2 = block.fc2.weight[-1], block.fc2.bias[-1]
    pre = torch.einsum("...hm,...m->...h", W, u) + block.fc1.bias
    uu = (u * u).sum(-1, keepdim=True)
    total = torch.zeros_like(pre)
    for _ in range(steps):
        cdf = 0.5 * (1 + torch.erf(pre * 0.5**0.5))
        r = (pre * cdf) @ a + b2 - y  # gelu(pre) = pre * Phi(pre)
        step = rate * r.unsqueeze(-1) * (a * (cdf + pre * torch.exp(-0.5 * pre * pre) * (2 * torch.pi) ** -0.5))
        total = total + step
        pre = pre - uu * step
    return total.unsqueeze(-1) * u.unsqueeze(-2)


@torch.no_grad()
def prefix_inputs(block: ContextualBlock, context: torch.Tensor) -> torch.Tensor:
    """The MLP inputs ``(B, N, m)`` of the prefix prompts ``[c_1..c_{j-1}, [x_j; 0]]`` (the other
    reading of finetuning "one example at a time": each example's input after the ones before)."""
    x = context.clone()
    x[..., -1] = 0.0
    return torch.stack([block.mlp_input(join(context[:, :j], x[:, j]))[0] for j in range(context.shape[1])], 1)


def refine_setting(
    block: ContextualBlock,
    tokens: torch.Tensor,
    target: torch.Tensor,
    tried: Mapping[tuple[float, int], torch.Tensor],
    *,
    max_steps: int,
    max_rounds: int = 3,
) -> tuple[tuple[float, int], dict, bool]:
    """Extend a finetuning sweep until its best setting is interior: a local search.

    ``tried`` maps the settings ``(lr, steps per example)`` already run on ``tokens`` to their
    final test loss per task ``(B,)``. From the best of them (lowest mean), the neighbours not yet
    tried, a rate three times larger at the same steps and three times more steps at the same rate
    and at a third of the rate (about the same ``lr x steps``), are run with
    :func:`finetune_comparison` (none above ``max_steps`` steps per example). The search moves to
    the best neighbour if it lowers the mean loss by more than one standard error of the paired
    difference over the tasks (a smaller gain is not told from the noise of the selection), for at
    most ``max_rounds`` rounds. Returns the chosen setting, every setting's per-task losses (the
    new ones included), and whether the choice is interior: every neighbour was run and none did
    better by that margin."""
    if not tried:
        raise ValueError("need at least one setting already tried")
    tried = dict(tried)
    best = min(tried, key=lambda st: float(tried[st].mean()))
    for _ in range(max_rounds):
        lr, k = best
        hood = [(3 * lr, k), (lr, 3 * k), (lr / 3, 3 * k)]
        new = [st for st in hood if st not in tried and st[1] <= max_steps]
        for steps in sorted({st[1] for st in new}):
            rates = [st[0] for st in new if st[1] == steps]
            r = finetune_comparison(block, tokens, target, lr=rates, steps_per_example=steps)
            for rate, curve in zip(rates, r["loss_ft"]):  # a list of rates keeps the rate dimension
                tried[(rate, steps)] = curve[:, -1]
        better = []
        for st in (st for st in hood if st in tried):
            diff = tried[best] - tried[st]  # > 0 where the neighbour is better
            if float(diff.mean()) > float(diff.std() / len(diff) ** 0.5):
                better.append(st)
        if not better:
            return best, tried, all(st in tried for st in hood)
        best = min(better, key=lambda st: float(tried[st].mean()))
    return best, tried, False


@torch.no_grad()
def query_inputs(block: ContextualBlock, context: torch.Tensor) -> torch.Tensor:
    """The MLP inputs ``(B, N, m)`` of the query-only prompts ``[x_j; 0]`` built from each
    context example (the finetuning data; they do not depend on ``W``)."""
    B, N, n = context.shape
    x = context.clone()
    x[..., -1] = 0.0
    return block.mlp_input(x.reshape(B * N, 1, n))[0].reshape(B, N, -1)


def half_drop_index(curve: torch.Tensor, reference: str = "drop") -> int | None:
    """How early a loss curve ``(N + 1,)`` falls: the first ``i`` at which it has made half its fall.

    ``reference="drop"`` (the default, the *normalised* index): half of the curve's own drop,
    the first ``i`` with ``curve[i] <= curve[0] - (curve[0] - curve[-1]) / 2``; None if the curve
    ends no lower than it starts. It measures the shape alone, whatever the curve's end point.
    ``reference="start"``: half of its starting value, ``curve[i] <= curve[0] / 2``; None if it
    never gets there. A curve that removes less than half its starting loss never halves, so
    this index also reads the end point."""
    if reference not in ("drop", "start"):
        raise ValueError(f"reference must be 'drop' or 'start', got {reference!r}")
    if curve.dim() != 1 or len(curve) < 2:
        raise ValueError(f"need one loss curve (N + 1 >= 2,), got shape {tuple(curve.shape)}")
    if reference == "drop":
        if not bool(curve[-1] < curve[0]):
            return None
        level = curve[0] - (curve[0] - curve[-1]) / 2
    else:
        level = curve[0] / 2
    below = torch.nonzero(curve <= level)
    return int(below[0]) if len(below) else None


def finetune_to_convergence(
    block: ContextualBlock, tokens: torch.Tensor, target: torch.Tensor, *, max_iters: int, tol: float
) -> dict:
    """Finetune ``W`` alone on all ``N`` context examples of each task at once until it fits them,
    then test on the query: what finetuning the same weight can reach, whatever its speed.

    The fit minimises each task's mean squared error on its ``N`` examples ``(T_W([x_j; 0]) -
    y_j)^2`` over ``W`` (``h x m`` weights against ``N`` equations: an interpolating ``W``
    exists in general). Plain gradient descent crawls on this problem (it is badly conditioned),
    so we run a damped Gauss-Newton method (Levenberg-Marquardt): each step is
    ``dW = -J^T (J J^T + lam I)^{-1} r``, which as ``lam -> 0`` is the smallest change of ``W``
    that solves the linearised fit, the point that gradient descent on the linearised loss
    converges to from the same start (the damping shortens it where the linearisation is poor). The
    Jacobian of example ``j``'s prediction is ``g_j u_j^T`` (``u_j`` its MLP input, ``g_j`` the
    derivative of the prediction with respect to the pre-activation), so ``J J^T`` is the
    ``N x N`` matrix ``(g_j . g_k)(u_j . u_k)``. A step that lowers a task's loss is taken and
    its damping ``lam`` divided by 3; one that does not is refused and ``lam`` multiplied by 4.
    "Smallest" is measured in the metric of the whitened inputs: ``u_j . u_k`` becomes
    ``u_j^T S^{-1} u_k`` and the step ``-sum_j alpha_j g_j (S^{-1} u_j)^T``, with ``S`` the second
    moment of the MLP inputs over all tasks. In the plain Frobenius metric a block whose value
    path is nearly one-dimensional (query-only inputs along one direction) gets steps that barely
    move ``W`` along the weak direction, and the fit stalled for thousands of steps at one seed;
    whitened, it converges in a handful.

    Runs until every task's training MSE is at most ``tol`` or ``max_iters`` steps have run; a
    task that has converged stops moving, and the later steps compute only the others.
    Returns per task ``(B,)``: ``test`` (the squared error on the query) and ``train`` (the mean
    squared error on the context examples) at the end, ``test_start``, ``train_start``,
    ``converged`` (``train <= tol``), the final weights ``W`` ``(B, h, m)``, and ``iterations``
    (an int: the steps run)."""
    if block.variant != "plain":
        raise ValueError("finetune_to_convergence is written for the plain block")
    if max_iters < 1 or not tol > 0:
        raise ValueError(f"need max_iters >= 1 and tol > 0, got {max_iters}, {tol}")
    context, query = split(tokens)
    B, N, _ = context.shape
    u_ft, y = query_inputs(block, context), context[..., -1]  # (B, N, m), (B, N)
    with torch.no_grad():
        u0 = block.mlp_input(query.unsqueeze(1))[0]
    W0 = block.W.detach()
    # the step's metric: whitened MLP inputs (C^{-1/2} u with C their second moment over all tasks),
    # so that nearly one-dimensional inputs (a value path of one dominant direction) do not
    # make the smallest change of W a tiny one along the strong direction only
    metric = torch.linalg.pinv(torch.einsum("bnm,bnk->mk", u_ft, u_ft) / (B * N), hermitian=True)
    u_metric = u_ft @ metric  # (B, N, m): C^{-1} u_j
    gram_u = torch.einsum("bnm,bkm->bnk", u_ft, u_metric)
    eye = torch.eye(N, dtype=tokens.dtype)

    def residuals(Wt, tasks):  # r_j = T_W([x_j; 0]) - y_j and g_j = d prediction_j / d pre_j
        with torch.enable_grad():
            pre = (torch.einsum("bhm,bnm->bnh", Wt, u_ft[tasks]) + block.fc1.bias).detach().requires_grad_(True)
            pred = block.fc2(F.gelu(pre))[..., -1]
            (g,) = torch.autograd.grad(pred.sum(), pre)
        return (pred - y[tasks]).detach(), g

    def test_loss(Wt):
        with torch.no_grad():
            return (block.head(u0, None, W=Wt)[..., -1] - target) ** 2

    Wt = W0.expand(B, *W0.shape).clone()
    r, g = residuals(Wt, torch.arange(B))
    mse = (r**2).mean(1)
    train_start = mse.clone()
    lam = torch.full((B,), 1e-3, dtype=tokens.dtype)
    iterations = 0
    while iterations < max_iters:
        act = torch.nonzero(mse > tol).flatten()  # only the tasks that have not converged move on
        if len(act) == 0:
            break
        iterations += 1
        g_a, r_a = g[act], r[act]
        K = torch.einsum("bnh,bkh->bnk", g_a, g_a) * gram_u[act]
        scale = K.diagonal(dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(K.dtype).tiny)
        alpha = torch.linalg.solve(K + (lam[act] * scale)[:, None, None] * eye, r_a)
        W_new = Wt[act] - torch.einsum("bn,bnh,bnm->bhm", alpha, g_a, u_metric[act])
        r_new, g_new = residuals(W_new, act)
        mse_new = (r_new**2).mean(1)
        better = mse_new < mse[act]
        Wt[act] = torch.where(better[:, None, None], W_new, Wt[act])
        r[act] = torch.where(better[:, None], r_new, r_a)
        g[act] = torch.where(better[:, None, None], g_new, g_a)
        mse[act] = torch.where(better, mse_new, mse[act])
        lam[act] = torch.where(better, lam[act] / 3, lam[act] * 4).clamp(1e-12, 1e12)
    return {
        "test": test_loss(Wt),
        "train": mse,
        "test_start": test_loss(W0.expand(B, *W0.shape)),
        "train_start": train_start,
        "converged": mse <= tol,
        "iterations": iterations,
        "W": Wt,
    }


def sgd_alignment(block: ContextualBlock, tokens: torch.Tensor) -> dict:
    """How well the implicit patch lines up with one step of gradient descent on the context.

    Per task: the cosine (normalised Frobenius inner product) between Theorem 2.2's ``dW`` for
    the whole context and the negative gradient, at the block's own ``W``, of the finetuning loss
    ``sum_j (T_W([x_j; 0]) - y_j)^2 / 2`` over the task's ``N`` examples (one full-batch SGD
    step, whatever its rate). The null, ``"foreign"``: the same cosine against the step on the
    next task's examples (another ``w``). Returns ``"cosine"`` and ``"foreign"``, each ``(B,)``."""
    if block.variant != "plain":
        raise ValueError("sgd_alignment is written for the plain block")
    context, _ = split(tokens)
    if context.shape[0] < 2:
        raise ValueError("need at least two tasks (the null reads another task's examples)")
    u, y = query_inputs(block, context), context[..., -1]  # (B, N, m), (B, N)
    W = block.W.detach()
    with torch.enable_grad():
        pre = (torch.einsum("hm,bnm->bnh", W, u) + block.fc1.bias).detach().requires_grad_(True)
        pred = block.fc2(F.gelu(pre))[..., -1]
        (g,) = torch.autograd.grad(pred.sum(), pre)  # d prediction_j / d pre_j, (B, N, h)
    step = -torch.einsum("bn,bnh,bnm->bhm", (pred - y).detach(), g, u)  # -grad of the loss, (B, h, m)
    with torch.no_grad():
        dW = implicit_patch(block, tokens, tokens[:, -1:]).dW

    def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.flatten(1), b.flatten(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    return {"cosine": cosine(dW, step), "foreign": cosine(dW, step.roll(-1, dims=0))}


@torch.no_grad()
def patch_transfer(
    block: ContextualBlock,
    tokens: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor,
    n_fresh: int,
    generator: torch.Generator,
    W_other: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
    n_random: int = 0,
    random_generator: torch.Generator | None = None,
) -> dict:
    """Does the patch built for one query act as "learned weights" for its task?

    For each task, the patch ``dW`` of its prompt (built for its query ``x_q``) is applied to
    ``n_fresh`` fresh queries of the same task, each read alone. Compared with: the same fresh
    queries alone and unpatched (no update), and in context (the same context before each).
    With ``W_other`` ``(B, h, m)``, also those weights (for example finetuned ones) on the fresh
    queries (key ``"other"``); a mapping ``{name: (B, h, m)}`` gives one key per name.

    With ``n_random > 0`` (and ``random_generator``), the null of the patch: ``n_random`` random
    rank-1 patches per task, each ``||dW||_F l r^T`` with ``l``, ``r`` uniform unit vectors (the
    task's own patch norm, random directions), on the same fresh queries: ``"random_draws"``
    ``(B, n_random)`` and their mean ``"random"`` ``(B,)``. Returns per-task mean squared errors
    ``(B,)``."""
    if block.variant != "plain":
        raise ValueError("patch_transfer is written for the plain block")
    if n_random < 0 or (n_random > 0 and random_generator is None):
        raise ValueError(f"n_random must be >= 0, with a random_generator when > 0 (got {n_random})")
    context, _ = split(tokens)
    B, N, n = context.shape
    patch = implicit_patch(block, tokens, tokens[:, -1:])
    queries, qt = with_queries(tokens, w, n_fresh, generator)  # (B, Q, n), (B, Q)
    u = block.mlp_input(queries.reshape(B * n_fresh, 1, n))[0].reshape(B, n_fresh, -1)

    def err(pred):
        return ((pred - qt) ** 2).mean(-1)

    ctx = context.unsqueeze(1).expand(B, n_fresh, N, n).reshape(B * n_fresh, N, n)
    out = {
        "own_query": (patched_output(block, tokens[:, -1:], patch)[:, -1] - target) ** 2,
        "patched": err(block.head(u, None, W=(block.W + patch.dW).unsqueeze(1))[..., -1]),
        "unpatched": err(block.head(u, None)[..., -1]),
        "in_context": err(block(join(ctx, queries.reshape(B * n_fresh, n))).reshape(B, n_fresh)),
    }
    others = {"other": W_other} if isinstance(W_other, torch.Tensor) else dict(W_other or {})
    for name, Wo in others.items():
        out[name] = err(block.head(u, None, W=Wo.unsqueeze(1))[..., -1])
    if n_random:
        h, m = block.W.shape
        left = F.normalize(torch.randn(B, n_random, h, generator=random_generator, dtype=u.dtype), dim=-1)
        right = F.normalize(torch.randn(B, n_random, m, generator=random_generator, dtype=u.dtype), dim=-1)
        size = patch.dW.flatten(1).norm(dim=1)[:, None, None, None]
        W_rand = block.W + size * left.unsqueeze(-1) * right.unsqueeze(-2)  # (B, R, h, m)
        pred = block.head(u.unsqueeze(1), None, W=W_rand.unsqueeze(2))[..., -1]  # (B, R, Q)
        out["random_draws"] = ((pred - qt.unsqueeze(1)) ** 2).mean(-1)
        out["random"] = out["random_draws"].mean(1)
    return out


@torch.no_grad()
def static_patch_transfer(
    block: ContextualBlock,
    tokens: torch.Tensor,
    w: torch.Tensor,
    Ks: Sequence[int],
    n_fresh: int,
    generator: torch.Generator,
) -> dict:
    """A static patch per task (:func:`static_patch`) fitted on ``K`` calibration queries of the
    task, tried on ``n_fresh`` other fresh queries of it, each read alone.

    For each task: ``max(Ks)`` calibration queries and ``n_fresh`` fresh queries are drawn; for
    each ``K`` of ``Ks`` the patch is fitted on the first ``K`` calibration queries (``K = 1``:
    Theorem 2.2's patch of one calibration query). The null, ``"foreign_K"``: the same fit on
    another task's context (:func:`foreign_contexts`' shift), applied to this task's fresh
    queries. Returns per-task mean squared errors ``(B,)`` on the fresh queries: ``"static_K"``,
    ``"foreign_K"``, ``"unpatched"`` (no update) and ``"in_context"`` (the block reading the
    context before each fresh query), and ``"calibration_K"``: the fitted patch's error on its
    own calibration queries."""
    if block.variant != "plain":
        raise ValueError("static_patch_transfer is written for the plain block")
    Ks = sorted(set(int(k) for k in Ks))
    if not Ks or Ks[0] < 1 or n_fresh < 1:
        raise ValueError(f"need calibration sizes K >= 1 and n_fresh >= 1, got {Ks}, {n_fresh}")
    context, _ = split(tokens)
    B, N, n = context.shape
    if B < 2:
        raise ValueError("need at least two tasks (the null reads another task's context)")
    queries, qt = with_queries(tokens, w, Ks[-1] + n_fresh, generator)  # (B, Q, n), (B, Q)
    Q = queries.shape[1]

    def mlp_in(ctx: torch.Tensor | None) -> torch.Tensor:  # (B, Q, m): A(C, x) or A(x) for every query
        if ctx is None:
            return block.mlp_input(queries.reshape(B * Q, 1, n))[0].reshape(B, Q, -1)
        c = ctx.unsqueeze(1).expand(B, Q, N, n).reshape(B * Q, N, n)
        return block.mlp_input(join(c, queries.reshape(B * Q, n)))[0].reshape(B, Q, -1)

    alone, with_ctx, with_foreign = mlp_in(None), mlp_in(context), mlp_in(context.roll(-1, dims=0))
    fresh = slice(Ks[-1], Q)

    def err(W: torch.Tensor, rows: slice) -> torch.Tensor:
        return ((block.head(alone[:, rows], None, W=W.unsqueeze(1))[..., -1] - qt[:, rows]) ** 2).mean(-1)

    out = {
        "unpatched": ((block.head(alone[:, fresh], None)[..., -1] - qt[:, fresh]) ** 2).mean(-1),
        "in_context": ((block.head(with_ctx[:, fresh], None)[..., -1] - qt[:, fresh]) ** 2).mean(-1),
    }
    for K in Ks:
        cal = slice(0, K)
        dW = static_patch(block.W, with_ctx[:, cal], alone[:, cal])
        out[f"static_{K}"] = err(block.W + dW, fresh)
        out[f"calibration_{K}"] = err(block.W + dW, cal)
        out[f"foreign_{K}"] = err(block.W + static_patch(block.W, with_foreign[:, cal], alone[:, cal]), fresh)
    return out


@torch.no_grad()
def position_check(block: ContextualBlock, tokens: torch.Tensor) -> dict:
    """Theorem 2.2 at every position ``t`` of a causal block, not only the last: the block's
    output at ``t`` (reading tokens ``1..t``) against token ``t`` read alone with its own patch
    ``dW_t`` (and ``db_t`` with skips). Also checks that the causal pass agrees with the
    block's ordinary forward pass at the last position."""
    B, T, n = tokens.shape
    u_all, z_all = block.mlp_input_all(tokens)  # (B, T, m), (B, T, d)
    u_x, z_x = (t.reshape(B, T, -1) for t in block.mlp_input(tokens.reshape(B * T, 1, n)))
    dW = rank_one_update(block.W, u_all, u_x)  # (B, T, h, m)
    db = None if block.variant == "plain" else z_all - z_x
    full = block.head(u_all, z_all)
    patched = block.head(u_x, z_x, W=block.W + dW, bias_shift=db)
    return {
        "max_gap": float((full - patched).abs().max()),
        "unpatched_gap": float((full - block.head(u_x, z_x)).abs().mean()),
        "causal_vs_forward": float((full[:, -1] - block.head(*block.mlp_input(tokens))).abs().max()),
        "positions": T,
    }


@torch.no_grad()
def stack_check(stack: BlockStack, tokens: torch.Tensor, target: torch.Tensor) -> dict:
    """Stacked blocks: one rank-1 patch per block (:func:`stack_patches`) lets the stack read the
    query alone and reproduce the prompt."""
    patches = stack_patches(stack, tokens)
    y_ctx = stack(tokens)
    y_patch = stack_patched_output(stack, tokens[:, -1:], patches)[:, -1]
    return {
        "max_gap": float((y_ctx - y_patch).abs().max()),
        "rank_ratio": float(max(rank_ratio(p.dW).max() for p in patches)),
        "loss_ctx": float(((y_ctx - target) ** 2).mean()),
        "loss_query_only": float(((stack(tokens[:, -1:]) - target) ** 2).mean()),
        "context_effect": float((y_ctx - stack(tokens[:, -1:])).abs().mean()),
        "patch_norms": [float(p.dW.flatten(1).norm(dim=1).mean()) for p in patches],
    }


@torch.no_grad()
def attention_reference_gap(layer: SoftmaxAttention, tokens: torch.Tensor) -> dict:
    """Our softmax attention against PyTorch's ``scaled_dot_product_attention``, an independent
    implementation: the forward pass (last position), the causal pass (every position) and the
    prefix outputs ``A(c_1..c_i, x)`` at a few ``i``."""
    if not isinstance(layer, SoftmaxAttention):
        raise TypeError(f"attention_reference_gap needs a SoftmaxAttention, got {type(layer).__name__}")

    def reference(seq: torch.Tensor) -> torch.Tensor:  # causal, every position (B, T, d_out)
        B, T, _ = seq.shape
        q, k, v = (p(seq).view(B, T, layer.heads, layer.d_k).transpose(1, 2) for p in (layer.q, layer.k, layer.v))
        idx = torch.arange(T)
        allowed = idx[None, :] <= idx[:, None]
        if layer.window is not None:
            allowed &= idx[None, :] > idx[:, None] - layer.window
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.to(seq.device))
        return layer.o(out.transpose(1, 2).flatten(-2))

    ref = reference(tokens)
    context, query = split(tokens)
    N = context.shape[1]
    pre = layer.prefixes(context, query)
    picks = sorted({0, 1, N // 2, N})
    pre_ref = torch.stack([reference(join(context[:, :i], query))[:, -1] for i in picks], 1)
    return {
        "forward": float((layer(tokens) - ref[:, -1]).abs().max()),
        "causal": float((layer.causal(tokens) - ref).abs().max()),
        "prefixes": float((pre[:, picks] - pre_ref).abs().max()),
    }


@torch.no_grad()
def linear_dual_gap(layer: LinearAttention, tokens: torch.Tensor, n_prompts: int = 8) -> float:
    """Linear attention in chapter 2's dual form: per head, ``A(C, x) = W_O [(W_ZSL + dW_ICL) q]
    + b_O`` with ``dW_ICL = sum_j (W_V c_j)(W_K c_j)^T`` over the context and ``W_ZSL`` the
    query's own term, computed with :mod:`iclbook.implicit.dual_form` on the first prompts.
    Returns the largest gap to the layer's forward pass."""
    from iclbook.implicit import dual_form

    context, query = split(tokens[:n_prompts])
    e = layer.d_k
    worst = 0.0
    for b in range(context.shape[0]):
        heads = []
        for h in range(layer.heads):
            wq, wk, wv = (p.weight[h * e : (h + 1) * e] for p in (layer.q, layer.k, layer.v))
            x = query[b].unsqueeze(1)  # (n, 1)
            parts = dual_form.relaxed_icl(wk, wv, context[b].T, x, wq @ query[b])
            heads.append(parts["zsl"] + parts["update"])
        direct = layer(join(context[b : b + 1], query[b : b + 1]))[0]
        worst = max(worst, float((layer.o(torch.cat(heads)) - direct).abs().max()))
    return worst


def gd_linear_attention(d: int, eta: float, dtype=torch.float64) -> LinearAttention:
    """A one-head linear attention whose output's last coordinate at the query is the prediction
    of one gradient-descent step from ``w = 0`` on the context's loss
    ``sum_j (y_j - <w, x_j>)^2 / 2`` at rate ``eta`` (the construction of von Oswald et al. 2023):
    query and key read ``x``, the value reads ``[x; eta y]``, so the last coordinate is
    ``eta sum_j y_j <x_j, x_q>``. The other coordinates pass ``sum_j x_j <x_j, x_q>`` through,
    which keeps ``A(x) = x_q ||x_q||^2`` away from zero."""
    n = d + 1
    layer = LinearAttention(n, heads=1, d_k=n, d_out=n).to(dtype)
    read_x = torch.diag(torch.tensor([1.0] * d + [0.0], dtype=dtype))
    with torch.no_grad():
        layer.q.weight.copy_(read_x)
        layer.k.weight.copy_(read_x)
        layer.v.weight.copy_(torch.diag(torch.tensor([1.0] * d + [eta], dtype=dtype)))
        layer.o.weight.copy_(torch.eye(n, dtype=dtype))
        layer.o.bias.zero_()
    return layer


@torch.no_grad()
def gd_step_gap(layer: LinearAttention, tokens: torch.Tensor, eta: float) -> float:
    """Largest gap between the layer's last output coordinate and one GD step's prediction
    ``<eta sum_j y_j x_j, x_q>`` (for the layer of :func:`gd_linear_attention`)."""
    context, query = split(tokens)
    w1 = eta * torch.einsum("bn,bnd->bd", context[..., -1], context[..., :-1])
    return float((layer(tokens)[:, -1] - (w1 * query[:, :-1]).sum(-1)).abs().max())
