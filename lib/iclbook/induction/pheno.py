"""The phenomenological model (reconstructed): the induction head's dynamics as a loss of three
scalars with nested logits, and gradient descent (or Adam, the contrast) on it.

``beta1`` is the previous-token copy (``s1 = sigmoid(beta1)``), ``alpha`` the strength with which
the query finds the matching label, ``xi`` how well the read-out separates label vectors. Only
``xi`` feels a gradient at the origin; ``alpha`` moves once ``xi != 0`` and ``beta1`` once both
do, which makes a long slow phase and then a cliff. When ``L = N`` the origin is critical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def pheno_loss(
    beta1: torch.Tensor, alpha: torch.Tensor, xi: torch.Tensor, N: int, L: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, p(correct) and p(some context label) of the phenomenological model (reconstructed).

    With ``s1 = sigmoid(beta1)`` (layer 1 copies the previous item) and
    ``a2 = exp(alpha s1) / (exp(alpha s1) + N - 1)`` (layer 2 finds the matching label), the
    correct label's logit is ``xi a2``, the other ``N - 1`` context labels' ``xi (1 - a2)/(N - 1)``
    and the ``L - N`` absent labels' 0; ``xi`` is how well the read-out separates label vectors.
    The loss is the cross-entropy of the correct label. Broadcasts over its tensor arguments,
    ``L`` included (one value per row of a batch of descents; ``L = N`` has no absent labels).
    """
    L_t = torch.as_tensor(L, dtype=torch.float64)
    if not (1 <= N and bool((L_t >= N).all())):
        raise ValueError(f"need 1 <= N <= L, got N={N}, L={L}")
    s1 = torch.sigmoid(beta1)
    a2 = torch.exp(alpha * s1) / (torch.exp(alpha * s1) + (N - 1))
    correct = xi * a2
    other = xi * (1 - a2) / max(N - 1, 1)
    absent = torch.where(L_t > N, torch.log((L_t - N).clamp_min(1)), torch.tensor(-math.inf, dtype=torch.float64))
    parts = [
        correct,
        other + math.log(N - 1) if N > 1 else None,
        absent.to(correct.dtype) if bool((L_t > N).any()) else None,
    ]
    log_z = torch.logsumexp(torch.stack(torch.broadcast_tensors(*[p for p in parts if p is not None])), 0)
    loss = log_z - correct
    p_context = torch.exp(
        torch.logsumexp(torch.stack(torch.broadcast_tensors(*[p for p in parts[:2] if p is not None])), 0) - log_z
    )
    return loss, torch.exp(-loss), p_context


def pheno_gradient(beta1: float, alpha: float, xi: float, N: int, L: int) -> np.ndarray:
    """The gradient ``(dL/dbeta1, dL/dalpha, dL/dxi)`` at one point, in float64."""
    p = torch.tensor([beta1, alpha, xi], dtype=torch.float64, requires_grad=True)
    loss, _, _ = pheno_loss(p[0], p[1], p[2], N, L)
    loss.backward()
    return p.grad.numpy()


def pheno_descent(
    N: int, L: int, *, steps: int, lr: float, start: tuple[float, float, float] = (0.0, 0.0, 0.0), optimizer: str = "gd"
) -> dict[str, np.ndarray]:
    """Descent on the phenomenological loss from ``start = (beta1, alpha, xi)``: plain gradient
    descent (``optimizer="gd"``) or Adam (``"adam"``, torch's defaults otherwise), the contrast
    that shows how a per-parameter rescaling of the gradient changes the dynamics.

    Returns arrays over steps ``0..steps``: ``beta1``, ``alpha``, ``xi``, ``loss``, ``p_correct``,
    ``p_context``.
    """
    return pheno_descents(N, [L], steps=steps, lr=lr, start=start, optimizer=optimizer)[0]


def _loss_and_gradient(p: np.ndarray, N: int, L: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`pheno_loss` and its gradient for rows ``p = (beta1, alpha, xi)`` ``(n, 3)`` in
    float64 NumPy, by hand (a descent takes thousands of steps of a few scalars, where autograd's
    per-operation cost is all the time; a test checks this against autograd on
    :func:`pheno_loss`). Returns loss, p(correct), p(context) ``(n,)`` each and the gradient
    ``(n, 3)``."""
    beta1, alpha, xi = p[:, 0], p[:, 1], p[:, 2]
    s1 = 1.0 / (1.0 + np.exp(-beta1))
    e = np.exp(alpha * s1)
    a2 = e / (e + (N - 1))
    m = max(N - 1, 1)
    correct = xi * a2
    other = xi * (1 - a2) / m
    terms = [correct]
    if N > 1:
        terms.append(other + math.log(N - 1))
    with np.errstate(divide="ignore"):
        absent = np.where(L > N, np.log(np.maximum(L - N, 1.0)), -np.inf)
    if (L > N).any():
        terms.append(absent)
    t = np.stack(np.broadcast_arrays(*terms))
    top = t.max(0)
    log_z = top + np.log(np.exp(t - top).sum(0))
    loss = log_z - correct
    p_c = np.exp(correct - log_z)
    p_o = np.exp(terms[1] - log_z) if N > 1 else np.zeros_like(p_c)
    # dloss/dcorrect = p_c - 1 and dloss/d(other) = p_o (all N - 1 others move together)
    g_a2 = (p_c - 1) * xi - p_o * xi / m
    g_u = g_a2 * a2 * (1 - a2)  # u = alpha s1
    grad = np.stack([g_u * alpha * s1 * (1 - s1), g_u * s1, (p_c - 1) * a2 + p_o * (1 - a2) / m], 1)
    return loss, p_c, p_c + (p_o if N > 1 else 0.0), grad


def pheno_descents(
    N: int,
    Ls: Sequence[int],
    *,
    steps: int,
    lr: float,
    start: tuple[float, float, float] = (0.0, 0.0, 0.0),
    optimizer: str = "gd",
) -> list[dict[str, np.ndarray]]:
    """:func:`pheno_descent` for each ``L`` of ``Ls`` at once, as one batched computation (the
    descents are independent: each row's gradient is its own, and Adam is elementwise). The
    gradient is :func:`pheno_loss`'s, written out by hand in float64; Adam is torch's update
    (its defaults: betas 0.9, 0.999, eps 1e-8, bias-corrected)."""
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
    if not Ls:
        raise ValueError("need at least one L")
    L = np.array([float(x) for x in Ls])
    if not (N >= 1 and (L >= N).all()):
        raise ValueError(f"need 1 <= N <= L, got N={N}, L={list(Ls)}")
    p = np.array([list(start)] * len(Ls), dtype=np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2, eps = 0.9, 0.999, 1e-8
    out = np.empty((steps + 1, len(Ls), 6))
    for k in range(steps + 1):
        loss, pc, pctx, grad = _loss_and_gradient(p, N, L)
        out[k, :, :3], out[k, :, 3], out[k, :, 4], out[k, :, 5] = p, loss, pc, pctx
        if optimizer == "adam":
            t = k + 1
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
            p = p - (lr / (1 - b1**t)) * m / denom
        else:
            p = p - lr * grad
    keys = ["beta1", "alpha", "xi", "loss", "p_correct", "p_context"]
    return [{k: out[:, j, i] for i, k in enumerate(keys)} for j in range(len(Ls))]
