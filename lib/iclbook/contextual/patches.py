"""The paper's formulas: Theorem 2.2's rank-1 patch, its App. A bias shift, Prop. 3.1's
token-by-token dynamics, App. B's product form, and one patch per block of a stack.

Every formula divides by a squared norm ``||a||^2``. :func:`scaled_inverse` computes
``a / ||a||^2`` after scaling ``a`` by its largest entry, so that tiny (1e-160) or huge norms
neither underflow nor overflow, and raises a clear error where ``a`` is zero or not finite."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from iclbook.contextual.model import BlockStack, ContextualBlock


def scaled_inverse(a: torch.Tensor, what: str = "A(x)") -> torch.Tensor:
    """``a / ||a||^2`` over the last dimension, computed without forming ``||a||^2``.

    Raises ValueError if some ``a`` is zero (the patch is undefined) or not finite."""
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{what} has non-finite entries: the patch is undefined")
    s = a.abs().amax(-1, keepdim=True)
    if bool((s == 0).any()):
        raise ValueError(f"{what} is zero for some prompt: the rank-1 update is undefined")
    a_s = a / s
    return a_s / (s * (a_s * a_s).sum(-1, keepdim=True))


def scaled_norm(a: torch.Tensor) -> torch.Tensor:
    """``||a||`` over the last dimension without underflow or overflow (scaled by the max entry)."""
    s = a.abs().amax(-1)
    safe = torch.where(s == 0, torch.ones_like(s), s)
    return s * (a / safe.unsqueeze(-1)).norm(dim=-1)


def rank_one_update(W: torch.Tensor, a_full: torch.Tensor, a_reduced: torch.Tensor) -> torch.Tensor:
    """Theorem 2.2's patch ``dW = (W (a_full - a_reduced)) a_reduced^T / ||a_reduced||^2``.

    ``W`` is ``(h, m)``; ``a_full = A(C, x)`` and ``a_reduced = A(C \\ Y, x)`` are ``(..., m)``.
    Returns ``(..., h, m)``, one rank-1 matrix per prompt (never averaged over prompts: the patch
    is specific to its query). By construction ``(W + dW) a_reduced = W a_full``. It is the
    minimum-Frobenius-norm matrix with that property.

    Raises ValueError for mismatched shapes or a zero ``a_reduced`` (the patch is undefined).
    The book shows this function beside the theorem (chapter 4, section "Theorem 2.2").
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (h, m), got shape {tuple(W.shape)}")
    if a_full.shape != a_reduced.shape:
        raise ValueError(f"A(C,x) and A(C\\Y,x) differ in shape: {tuple(a_full.shape)} vs {tuple(a_reduced.shape)}")
    if a_full.shape[-1] != W.shape[1]:
        raise ValueError(f"W is {tuple(W.shape)} but the layer outputs have size {a_full.shape[-1]}")
    u = torch.einsum("hm,...m->...h", W, a_full - a_reduced)
    return u.unsqueeze(-1) * scaled_inverse(a_reduced, "A(C\\Y, x)").unsqueeze(-2)


def static_patch(W: torch.Tensor, a_full: torch.Tensor, a_reduced: torch.Tensor) -> torch.Tensor:
    """A *static* patch for one context, fitted over ``K`` calibration queries (the paper's later
    versions: a "thought patch" that does not depend on the query).

    ``a_full`` ``(..., K, m)`` holds ``A(C, x_k)`` and ``a_reduced`` ``(..., K, m)`` holds ``A(x_k)``
    for the ``K`` calibration queries of one context. Returns the minimum-Frobenius-norm
    ``dW_s`` ``(..., h, m)`` with ``dW_s A(x_k) = W (A(C, x_k) - A(x_k))`` for every ``k`` (the
    least-squares solution where no ``dW_s`` meets all ``K`` equations):
    ``dW_s = W D A^+`` with ``D = [dA_1 .. dA_K]`` and ``A = [A(x_1) .. A(x_K)]``. With ``K = 1``
    it is Theorem 2.2's rank-1 patch (:func:`rank_one_update`); its rank is at most ``min(K, m)``.
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (h, m), got shape {tuple(W.shape)}")
    if a_full.shape != a_reduced.shape or a_full.dim() < 2:
        raise ValueError(
            f"need A(C, x_k) and A(x_k) of one shape (..., K, m), got {tuple(a_full.shape)} and {tuple(a_reduced.shape)}"
        )
    if a_full.shape[-1] != W.shape[1]:
        raise ValueError(f"W is {tuple(W.shape)} but the layer outputs have size {a_full.shape[-1]}")
    if not (bool(torch.isfinite(a_full).all()) and bool(torch.isfinite(a_reduced).all())):
        raise ValueError("the layer outputs have non-finite entries: the patch is undefined")
    if bool((a_reduced.abs().amax(-1) == 0).any()):
        raise ValueError("A(x_k) is zero for some calibration query: the patch is undefined")
    target = torch.einsum("hm,...km->...hk", W, a_full - a_reduced)  # W dA_k as columns
    return target @ torch.linalg.pinv(a_reduced.transpose(-1, -2))  # (..., h, K) (K, m)


@dataclass
class Patch:
    """The implicit update of a block: ``dW`` ``(B, h, m)`` and, with skips, ``db`` ``(B, d_model)``."""

    dW: torch.Tensor
    db: torch.Tensor | None


#: Dtypes :func:`implicit_patch` has already warned about (it warns once per dtype).
_WARNED_DTYPES: set[torch.dtype] = set()


def warn_if_not_float64(*tensors: torch.Tensor) -> None:
    """Warn once per dtype that the patch's identities are checked in float64: in float32 they
    hold only to about 1e-7 (rounding), not to the 1e-10 the book's checks use."""
    for t in tensors:
        if t.is_floating_point() and t.dtype != torch.float64 and t.dtype not in _WARNED_DTYPES:
            _WARNED_DTYPES.add(t.dtype)
            warnings.warn(
                f"computing a patch in {t.dtype}: the identity holds to rounding, about 1e-7 in float32, "
                "not to the 1e-10 the book checks in float64; use a float64 block and tokens "
                "(cx.make_block(..., dtype=torch.float64)) to check it exactly",
                UserWarning,
                stacklevel=3,
            )


def implicit_patch(block: ContextualBlock, full: torch.Tensor, reduced: torch.Tensor) -> Patch:
    """The patch that makes ``block`` on ``reduced`` (the prompt without ``Y``) reproduce ``block``
    on ``full``: Theorem 2.2 for the plain block, with App. A's ``db' = dA`` (``= z_C - z_x``)
    for the skip and pre-LN blocks. Both prompts must end with the same query token.
    Warns once (per dtype) when the block or the prompts are not float64."""
    warn_if_not_float64(block.W, full)
    block.check_input(full)
    block.check_input(reduced)
    for name, seq in (("full", full), ("reduced", reduced)):
        if not bool(torch.isfinite(seq).all()):
            bad = tuple(torch.nonzero(~torch.isfinite(seq))[0].tolist())
            raise ValueError(
                f"the {name} prompt has non-finite entries (NaN or inf), first at (prompt, token, entry) = {bad}: "
                "the block's output, and any patch built from it, would be undefined"
            )
    if not torch.equal(full[:, -1], reduced[:, -1]):
        raise ValueError("the full and reduced prompts must end with the same query token")
    u_full, z_full = block.mlp_input(full)
    u_red, z_red = block.mlp_input(reduced)
    dW = rank_one_update(block.W, u_full, u_red)
    return Patch(dW, None if block.variant == "plain" else z_full - z_red)


def patched_output(block: ContextualBlock, reduced: torch.Tensor, patch: Patch, use_bias: bool = True) -> torch.Tensor:
    """The block's output ``(B, d_model)`` on ``reduced`` with ``W + dW`` (and ``b' + db``)."""
    u, z = block.mlp_input(reduced)
    return block.head(u, z, W=block.W + patch.dW, bias_shift=patch.db if use_bias else None)


def prop31_weights(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """Prop. 3.1's trajectory ``W_i = W0 + dW(c_1..c_i)``, ``i = 0..N``: ``(B, N + 1, h, m)``.

    ``prefixes`` is ``(B, N + 1, m)`` with ``prefixes[:, i] = A(c_1..c_i, x)`` (index 0: ``A(x)``)."""
    a0 = prefixes[:, :1].expand_as(prefixes)
    return W0 + rank_one_update(W0, prefixes, a0)


def prop31_recursion(W0: torch.Tensor, prefixes: torch.Tensor, gradient: str = "closed") -> torch.Tensor:
    """The same trajectory built as gradient steps ``W_{i+1} = W_i - h grad L_i(W_i)`` with
    ``L_i(W) = trace(D_i^T W)``, ``D_i = W0 (A_i - A_{i+1}) A(x)^T`` and ``h = 1/||A(x)||^2``
    (the ``W_{i+1}`` indexing; v1 prints it off by one). Returns ``(B, N + 1, h, m)``.

    ``gradient="closed"`` uses ``grad L_i = D_i`` with ``h D_i`` formed through
    :func:`scaled_inverse` (exact at any scale of ``A(x)``); ``gradient="autograd"`` differentiates
    ``L_i`` with ``torch.autograd`` at ``W_i``, an independent check of the paper's gradient
    (it raises if ``h`` over- or underflows)."""
    if gradient not in ("closed", "autograd"):
        raise ValueError(f"gradient must be 'closed' or 'autograd', got {gradient!r}")
    a0 = prefixes[:, 0]
    W = W0.expand(prefixes.shape[0], *W0.shape)
    out = [W]
    if gradient == "closed":
        right = scaled_inverse(a0)  # h A(x)
        for i in range(prefixes.shape[1] - 1):
            W = W - torch.einsum("hm,bm,bn->bhn", W0, prefixes[:, i] - prefixes[:, i + 1], right)
            out.append(W)
        return torch.stack(out, dim=1)
    scaled_inverse(a0)  # the same clear errors for a zero or non-finite A(x)
    step = 1.0 / (a0 * a0).sum(-1)  # h, (B,)
    if not bool(torch.isfinite(step).all()) or bool((step == 0).any()):
        raise ValueError("h = 1/||A(x)||^2 over- or underflows: use gradient='closed'")
    for i in range(prefixes.shape[1] - 1):
        D = torch.einsum("hm,bm,bn->bhn", W0, prefixes[:, i] - prefixes[:, i + 1], a0)
        with torch.enable_grad():
            Wi = W.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((D * Wi).sum(), Wi)  # sum_b trace(D_b^T W_b)
        W = W - step[:, None, None] * grad
        out.append(W)
    return torch.stack(out, dim=1)


def update_increments(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """``||W_{i+1} - W_i||_2`` for ``i = 0..N-1`` as ``(B, N)``: each increment is rank 1, so its
    spectral and Frobenius norms both equal ``||W0 (A_{i+1} - A_i)|| / ||A(x)||``."""
    scaled_inverse(prefixes[:, 0])  # clear errors for a zero or non-finite A(x)
    diff = torch.einsum("hm,bim->bih", W0, prefixes[:, 1:] - prefixes[:, :-1])
    return scaled_norm(diff) / scaled_norm(prefixes[:, :1])


def appendix_b_weights(W0: torch.Tensor, suffixes: torch.Tensor) -> torch.Tensor:
    """App. B's "front-consumption" update ``W_n = W0 (I + h_1 A_1) ... (I + h_n A_n)``.

    ``suffixes`` is ``(B, N + 1, m)`` with ``suffixes[:, i - 1] = A(c_i..c_N, x)`` (last: ``A(x)``);
    ``A_i = (S_i - S_{i+1}) S_{i+1}^T`` and ``h_i = 1 / ||S_{i+1}||^2``. Returns ``(B, h, m)``.
    """
    B, T, m = suffixes.shape
    eye = torch.eye(m, dtype=suffixes.dtype, device=suffixes.device)
    prod = eye.expand(B, m, m)
    for i in range(T - 1):
        nxt = suffixes[:, i + 1]
        factor = eye + (suffixes[:, i] - nxt).unsqueeze(-1) * scaled_inverse(nxt, "A(c_i..c_N, x)").unsqueeze(-2)
        prod = prod @ factor
    return W0 @ prod


def rank_ratio(M: torch.Tensor) -> torch.Tensor:
    """``sigma_2 / sigma_1`` of each matrix in ``(..., h, m)``: 0 for an exact rank-1 matrix."""
    s = torch.linalg.svdvals(M)
    return s[..., 1] / s[..., 0]


def stack_patches(stack: BlockStack, tokens: torch.Tensor) -> list[Patch]:
    """One patch per block that lets the stack read the query alone and reproduce the prompt.

    Block ``l``'s MLP input at the query depends on the context only through its layer ``A_l``;
    once blocks ``1..l-1`` are patched, the query's stream entering block ``l`` is the same as in
    the full prompt, so block ``l``'s patch is Theorem 2.2 applied to ``A_l(C_l, x_l)`` against
    ``A_l(x_l)``, where ``C_l`` is the full prompt's stream at the context positions."""
    patches = []
    for block, seq in zip(stack.blocks, stack.streams(tokens)):
        patches.append(implicit_patch(block, seq, seq[:, -1:]))
    return patches


def stack_patched_output(stack: BlockStack, query: torch.Tensor, patches: list[Patch]) -> torch.Tensor:
    """The stack's output ``(B, d_model)`` on the query alone ``(B, 1, n)`` with every block patched."""
    if len(patches) != len(stack.blocks):
        raise ValueError(f"{len(stack.blocks)} blocks but {len(patches)} patches")
    x = query
    for block, patch in zip(stack.blocks, patches):
        x = patched_output(block, x, patch).unsqueeze(1)
    return x[:, -1]
