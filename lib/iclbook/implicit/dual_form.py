"""The dual form of Dai et al. (2023), as exact identities (float64), and what it leaves out.

Notation follows the paper, with tokens as *columns*: ``X' (d, n')`` the demonstration tokens,
``X (d, n)`` the query-prompt tokens, ``q (d_k,)`` the query vector of the token that predicts.

* Eq. 11-12, :func:`relaxed_icl`: with the softmax (and the 1/sqrt(d)) dropped, attention over
  ``[X'; X]`` is ``(W_ZSL + dW_ICL) q`` with ``W_ZSL = W_V X (W_K X)^T`` and
  ``dW_ICL = sum_i (W_V x'_i)(W_K x'_i)^T``: an outer-product update of a "zero-shot weight".
* Eq. 7-9, :func:`sgd_dual_form`: a linear layer trained by sequential SGD is ``W_0 + sum_i e_i
  x'_i^T``, so ``F(x) = W_0 x + LinearAttn(V=E, K=X', q=x)``.
* Eq. 13, :func:`ft_update`: finetuning ``W_K`` and ``W_V`` changes the zero-shot weight by three
  terms.
* :func:`softmax_split`: what the relaxation throws away. Exact softmax attention is the convex
  mix ``(1 - lam) h_ZSL + lam h_demo`` with ``lam = Z_demo / (Z_demo + Z_query)``.
* :func:`layerwise_residual`: in a stack of layers the identity holds at layer 1 only, because
  from layer 2 on the query tokens' own inputs ``X^(l)`` differ between the zero-shot and the
  in-context pass.
* :func:`momentum_explicit` / :func:`momentum_recurrent`: Eq. 15's momentum term, two ways.

These are identities of linear algebra: they hold for any weights, so passing them says nothing
about what a trained model does. The chapter tests the trained model separately.
"""

from __future__ import annotations

import torch


def _check(x: torch.Tensor, name: str, dim: int) -> None:
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")


def _check_batched(x: torch.Tensor, name: str) -> None:
    if x.dim() < 2:
        raise ValueError(f"{name} must be (d, n) or a batch (..., d, n), got shape {tuple(x.shape)}")


def zsl_weight(w_k: torch.Tensor, w_v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``W_ZSL = W_V X (W_K X)^T``, shape ``(d_v, d_k)`` (``(..., d_v, d_k)`` for a batch of ``X``)."""
    _check_batched(x, "X")
    return (w_v @ x) @ (w_k @ x).transpose(-1, -2)


def icl_update(w_k: torch.Tensor, w_v: torch.Tensor, x_demo: torch.Tensor) -> torch.Tensor:
    """``dW_ICL = sum_i (W_V x'_i) outer (W_K x'_i)``, shape ``(d_v, d_k)`` (batched like
    :func:`zsl_weight`); empty ``X'`` gives 0."""
    _check_batched(x_demo, "X'")
    return (w_v @ x_demo) @ (w_k @ x_demo).transpose(-1, -2)


def relaxed_icl(
    w_k: torch.Tensor, w_v: torch.Tensor, x_demo: torch.Tensor, x: torch.Tensor, q: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Linear attention of ``q`` over ``[X'; X]`` and its two parts (Eq. 11-12).

    ``X'`` is ``(d, n')``, ``X`` ``(d, n)`` and ``q`` ``(d_k,)``, or batches of them with the
    same leading dimensions (``(..., d, n')``, ``(..., d, n)``, ``(..., d_k)``: one prompt each).
    Returns ``attention`` (computed directly as ``W_V [X';X] (W_K [X';X])^T q``), ``zsl``
    (``W_ZSL q``), ``update`` (``dW_ICL q``), and the matrices ``W_ZSL`` and ``dW_ICL``. The book
    shows this function beside Eq. 11-12 (chapter 2, section "The dual form, exactly")."""
    both = torch.cat([x_demo, x], dim=-1)
    col = q.unsqueeze(-1)
    direct = ((w_v @ both) @ ((w_k @ both).transpose(-1, -2) @ col)).squeeze(-1)
    w0, dw = zsl_weight(w_k, w_v, x), icl_update(w_k, w_v, x_demo)
    return {
        "attention": direct,
        "zsl": (w0 @ col).squeeze(-1),
        "update": (dw @ col).squeeze(-1),
        "W_ZSL": w0,
        "dW_ICL": dw,
    }


def ft_update(
    w_k: torch.Tensor, w_v: torch.Tensor, dw_k: torch.Tensor, dw_v: torch.Tensor, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Eq. 13: ``dW_FT = dW_V XX^T W_K^T + W_V XX^T dW_K^T + dW_V XX^T dW_K^T`` (its three terms
    and their sum) and, for comparison, ``(W_V + dW_V) XX^T (W_K + dW_K)^T - W_ZSL``."""
    xx = x @ x.T
    terms = (dw_v @ xx @ w_k.T, w_v @ xx @ dw_k.T, dw_v @ xx @ dw_k.T)
    direct = (w_v + dw_v) @ xx @ (w_k + dw_k).T - zsl_weight(w_k, w_v, x)
    return {"terms": terms, "dW_FT": terms[0] + terms[1] + terms[2], "direct": direct}


def sgd_dual_form(
    w0: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, lr: float, loss: str = "mse"
) -> dict[str, torch.Tensor]:
    """Train the linear layer ``F(x) = W x`` by sequential SGD, one example per step.

    ``inputs (n, d_in)``, ``targets (n, d_out)`` (``"mse"``, loss ``0.5 ||Wx - y||^2``) or
    ``(n,)`` class ids (``"ce"``). The error signal ``e_i = -lr dL/dy_i`` is taken at each step,
    with the weights of that step. Returns the trained ``W``, ``E (d_out, n)``, and
    ``dW = E X'^T`` built from the error signals (Eq. 8), which equals ``W - W_0``."""
    _check(inputs, "inputs", 2)
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    w = w0.clone()
    errors = []
    for x, y in zip(inputs, targets):
        out = w @ x
        if loss == "mse":
            grad_out = out - y
        else:
            grad_out = torch.softmax(out, 0) - torch.nn.functional.one_hot(y.long(), out.numel()).to(out)
        e = -lr * grad_out
        errors.append(e)
        w = w + torch.outer(e, x)
    e_mat = torch.stack(errors, dim=1)
    return {"W": w, "E": e_mat, "dW": e_mat @ inputs}


def linear_attention(values: torch.Tensor, keys: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``LinearAttn(V, K, q) = V K^T q`` with ``V (d_v, n)``, ``K (d_k, n)``."""
    return values @ (keys.T @ q)


def softmax_split(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, demo: torch.Tensor, scale: float | None = None
) -> dict[str, torch.Tensor]:
    """Split exact softmax attention into its zero-shot and demonstration parts.

    ``keys (d_k, n)``, ``values (d_v, n)``, ``demo (n,)`` bool (True for demonstration tokens;
    at least one token on each side). Returns ``h`` (the attention output), ``h_zsl`` (softmax
    over the query tokens only), ``h_demo`` (over the demonstrations only) and ``lam``, with
    ``h = (1 - lam) h_zsl + lam h_demo`` exactly."""
    demo = demo.bool()
    if demo.all() or not demo.any():
        raise ValueError("need at least one demonstration token and one query token")
    scale = keys.shape[0] ** -0.5 if scale is None else scale
    s = keys.T @ q * scale
    m = s.max()
    w = torch.exp(s - m)
    z_demo, z_query = w[demo].sum(), w[~demo].sum()
    h = values @ (w / w.sum())
    h_demo = values[:, demo] @ (w[demo] / z_demo)
    h_zsl = values[:, ~demo] @ (w[~demo] / z_query)
    return {"h": h, "h_zsl": h_zsl, "h_demo": h_demo, "lam": z_demo / (z_demo + z_query)}


def layerwise_residual(
    weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], x_demo: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """A stack of linear-attention layers with residual connections, ``h <- h + W_V H (W_K H)^T
    W_Q h`` over all tokens (causal). At every layer compare the in-context output at the last
    query token with ``(W_ZSL + dW_ICL) q`` where ``W_ZSL`` is built from the *zero-shot* pass's
    query-token inputs and ``dW_ICL`` from the in-context pass's demonstration inputs, the
    quantities the dual form names. Returns ``(layers,)`` relative residuals: 0 at layer 1 (the
    inputs agree), nonzero above (the query tokens have already attended to the demonstrations).
    """
    n_demo = x_demo.shape[1]
    h_icl = torch.cat([x_demo, x], dim=1)
    h_zsl = x.clone()
    residuals = []

    def layer(h: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
        k, v, q = w_k @ h, w_v @ h, w_q @ h
        mask = torch.tril(torch.ones(h.shape[1], h.shape[1], dtype=torch.bool))
        scores = (k.T @ q) * mask.T.to(h)  # scores[j, t] = k_j . q_t for j <= t
        return h + v @ scores

    for w_q, w_k, w_v in weights:
        q = w_q @ h_icl[:, -1]
        dual = (zsl_weight(w_k, w_v, h_zsl) + icl_update(w_k, w_v, h_icl[:, :n_demo])) @ q
        new_icl = layer(h_icl, w_q, w_k, w_v)
        attn = new_icl[:, -1] - h_icl[:, -1]
        residuals.append(torch.linalg.norm(attn - dual) / torch.linalg.norm(attn))
        h_icl, h_zsl = new_icl, layer(h_zsl, w_q, w_k, w_v)
    return torch.stack(residuals)


def momentum_explicit(values: torch.Tensor, eta: float) -> torch.Tensor:
    """Eq. 15's momentum term by its definition: ``m_t = sum_{i<t} eta^(t-i) v_i`` for each
    position ``t`` of ``values (n, d)``."""
    n = values.shape[0]
    out = torch.zeros_like(values)
    for t in range(n):
        for i in range(t):
            out[t] += eta ** (t - i) * values[i]
    return out


def momentum_recurrent(values: torch.Tensor, eta: float) -> torch.Tensor:
    """The same term in O(n): ``m_t = eta (m_{t-1} + v_{t-1})``, ``m_0 = 0``."""
    out = torch.zeros_like(values)
    for t in range(1, values.shape[0]):
        out[t] = eta * (out[t - 1] + values[t - 1])
    return out
