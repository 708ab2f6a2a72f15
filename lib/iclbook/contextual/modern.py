"""Blocks of modern language models and their exact context patches (Goldwaser, Munn, Gonzalvo
and Dherin 2025, who extend Theorem 2.2 to them).

Three blocks, each read at the last position of a sequence ``(B, T, n)``; ``[C, x]`` is the
prompt and ``x`` the query token alone:

``gemma``     RMSNorm before and after attention and before and after a gated MLP (Gemma 2/3):
              ``h = x + N2(A(N1([C, x])))``, ``u = N3(h)``,
              ``m = W_down (act(W_gate u) * (W_up u))``, ``T = h + N4(m)``,
              with ``N(v) = v / sqrt(mean(v^2) + eps) * (1 + g)`` (RMSNorm, Gemma's ``1 + g``
              scale) and ``act`` GELU (GeGLU) or SiLU (SwiGLU).
``postnorm``  The original transformer's block, LayerNorm after each residual sum:
              ``h = LN1(x + A([C, x]))``, ``T = LN2(h + W2 gelu(W1 h + b1) + b2)``.
``parallel``  Attention and MLP side by side (GPT-J, PaLM): ``T = x + A(LN([C, x])) + MLP(LN(x))``.

The context reaches each block's output through at most two routes, the MLP's input and the
residual stream, and each route gets its patch (:func:`modern_patch`), computed from two passes:

``gemma``     rank-1 ``dW_gate = W_gate (u_C - u_x) u_x^T / |u_x|^2`` and likewise ``dW_up``
              (Theorem 2.2 for each of the two matrices that read ``u``), so that the MLP on the
              query alone outputs ``m_C``; the residual's change ``dh = h_C - h_x`` is absorbed by
              the scale of the RMSNorm after the MLP, ``(1 + g') = (1 + g) + dh / (m_C r(m_C))``
              elementwise, ``r(m) = 1 / sqrt(mean(m^2) + eps)`` (needs every entry of ``m_C``
              non-zero). Goldwaser et al. map the context to rank-1 patches of the MLP's weights and
              a patch of the RMSNorm scale in the same way.
``postnorm``  rank-1 ``dW1`` on the MLP's input ``h``, and the residual's change ``dh`` as a shift
              of the MLP's output bias ``b2`` (inside the last LayerNorm).
``parallel``  the MLP reads the query token alone, so no weight patch is needed: the whole
              effect of the context is the shift ``A_C - A_x`` of the output bias, a steering vector.

Each patch reproduces the block on the prompt from the query alone exactly (in float64, to
rounding), for any weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iclbook import runtime
from iclbook.contextual.config import Config
from iclbook.contextual.layers import SoftmaxAttention
from iclbook.contextual.patches import rank_one_update, scaled_norm

KINDS = ("gemma", "postnorm", "parallel")


class RMSNorm(nn.Module):
    """``v / sqrt(mean(v^2) + eps) * (1 + weight)`` over the last dimension (Gemma's form)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(d))

    def inverse_rms(self, v: torch.Tensor) -> torch.Tensor:
        """``1 / sqrt(mean(v^2) + eps)``, ``(..., 1)``."""
        return torch.rsqrt((v * v).mean(-1, keepdim=True) + self.eps)

    def forward(self, v: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """With ``scale`` ``(..., d)`` in place of ``1 + weight`` (a patched scale, one per prompt)."""
        return v * self.inverse_rms(v) * (1 + self.weight if scale is None else scale)


class ModernBlock(nn.Module):
    """A Gemma-style, post-norm or parallel block (see the module's docstring) around one softmax
    attention layer ``(B, T, n) -> (B, n)``, read at the last position.

    :meth:`parts` returns what the context changes at the query: ``(h, u)`` (the residual stream
    and the MLP's input; for ``parallel``, the query token's stream ``x`` and the attention
    output ``a``); :meth:`head` finishes the block from them, with patched weights if given.
    ``forward(seq)`` is ``head(*parts(seq))``, the output ``(B, n)``."""

    def __init__(self, kind: str, d_model: int, width: int, heads: int, d_k: int, act: str = "gelu"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if act not in ("gelu", "silu"):
            raise ValueError(f"act must be 'gelu' (GeGLU) or 'silu' (SwiGLU), got {act!r}")
        self.kind, self.d_model, self.act = kind, d_model, act
        self.layer = SoftmaxAttention(d_model, heads, d_k, d_out=d_model)
        if kind == "gemma":
            self.norms = nn.ModuleList([RMSNorm(d_model) for _ in range(4)])
            self.gate = nn.Linear(d_model, width, bias=False)
            self.up = nn.Linear(d_model, width, bias=False)
            self.down = nn.Linear(width, d_model, bias=False)
        else:
            self.lns = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(2 if kind == "postnorm" else 1)])
            self.fc1 = nn.Linear(d_model, width)
            self.fc2 = nn.Linear(width, d_model)

    def check_input(self, seq: torch.Tensor) -> None:
        if seq.dim() != 3 or seq.shape[1] < 1 or seq.shape[2] != self.d_model:
            raise ValueError(f"a block reads (batch, tokens >= 1, {self.d_model}), got shape {tuple(seq.shape)}")

    def parts(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the context changes at the query, ``(B, n)`` each (see the class docstring)."""
        self.check_input(seq)
        x = seq[:, -1]
        if self.kind == "gemma":
            h = x + self.norms[1](self.layer(self.norms[0](seq)))
            return h, self.norms[2](h)
        if self.kind == "postnorm":
            h = self.lns[0](x + self.layer(seq))
            return h, h
        return x, self.layer(self.lns[0](seq))

    def head(self, h: torch.Tensor, u: torch.Tensor, patch: ModernPatch | None = None) -> torch.Tensor:
        """The block's output ``(B, n)`` from :meth:`parts`, with ``patch`` applied if given."""
        p = patch or ModernPatch()
        if self.kind == "gemma":
            act = F.gelu if self.act == "gelu" else F.silu
            gate = self.gate.weight if p.dW is None else self.gate.weight + p.dW
            up = self.up.weight if p.dW_up is None else self.up.weight + p.dW_up
            m = self.down(act(torch.einsum("...hm,...m->...h", gate, u)) * torch.einsum("...hm,...m->...h", up, u))
            return h + self.norms[3](m, scale=p.scale)
        W1 = self.fc1.weight if p.dW is None else self.fc1.weight + p.dW
        if self.kind == "postnorm":
            mlp = self.fc2(F.gelu(torch.einsum("...hm,...m->...h", W1, u) + self.fc1.bias))
            return self.lns[1](h + mlp + (0 if p.db is None else p.db))
        # parallel: h is the query token x, u the attention's output; the MLP reads LN(x) alone
        mlp = self.fc2(F.gelu(torch.einsum("...hm,...m->...h", W1, self.lns[0](h)) + self.fc1.bias))
        return h + u + mlp + (0 if p.db is None else p.db)

    def mlp_output(self, u: torch.Tensor) -> torch.Tensor:
        """The gated MLP's output ``m`` ``(B, n)`` on ``u`` (Gemma-style block only)."""
        act = F.gelu if self.act == "gelu" else F.silu
        return self.down(act(self.gate(u)) * self.up(u))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.head(*self.parts(seq))


@dataclass
class ModernPatch:
    """A block's patch: ``dW`` (``W_gate`` or ``W1``) and ``dW_up`` ``(B, width, n)``, the
    post-MLP RMSNorm's scale ``scale`` ``(B, n)`` (replacing ``1 + g``), the bias shift ``db``
    ``(B, n)``; ``None`` where a block needs none."""

    dW: torch.Tensor | None = None
    dW_up: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    db: torch.Tensor | None = None


def modern_patch(block: ModernBlock, tokens: torch.Tensor) -> ModernPatch:
    """The patch that makes ``block`` on the query alone reproduce it on the prompt ``tokens``.

    Raises ValueError where the patch is undefined: the query's MLP input is zero, or (Gemma
    block) an entry of the MLP's output on the prompt is zero, so no RMSNorm scale can absorb
    the residual's change there."""
    h_c, u_c = block.parts(tokens)
    h_x, u_x = block.parts(tokens[:, -1:])
    if block.kind == "parallel":
        return ModernPatch(db=u_c - u_x)
    if block.kind == "postnorm":
        return ModernPatch(dW=rank_one_update(block.fc1.weight, u_c, u_x), db=h_c - h_x)
    m_c = block.mlp_output(u_c)
    if bool((m_c == 0).any()):
        raise ValueError("an entry of the MLP's output on the prompt is zero: no RMSNorm scale absorbs the residual")
    norm = block.norms[3]
    scale = (1 + norm.weight) + (h_c - h_x) / (m_c * norm.inverse_rms(m_c))
    return ModernPatch(
        dW=rank_one_update(block.gate.weight, u_c, u_x), dW_up=rank_one_update(block.up.weight, u_c, u_x), scale=scale
    )


@torch.no_grad()
def modern_check(block: ModernBlock, tokens: torch.Tensor) -> dict:
    """The patch of :func:`modern_patch` on a batch: the largest gap between the block on the
    prompt and the patched block on the query alone, the mean effect of the context (the
    unpatched gap, so that the identity is not vacuous), and the largest ``sigma_2/sigma_1``
    of the weight patches."""
    patch = modern_patch(block, tokens)
    full = block(tokens)
    alone = block.head(*block.parts(tokens[:, -1:]))
    patched = block.head(*block.parts(tokens[:, -1:]), patch=patch)
    ranks = [torch.linalg.svdvals(d) for d in (patch.dW, patch.dW_up) if d is not None]
    return {
        "max_gap": float((full - patched).abs().max()),
        "context_effect": float(scaled_norm(full - alone).mean()),
        "rank_ratio": max((float((s[..., 1] / s[..., 0]).max()) for s in ranks), default=0.0),
    }


def make_modern(kind: str, cfg: Config, *, seed: int, act: str = "gelu", dtype=torch.float64) -> ModernBlock:
    """A block of ``kind`` initialised from ``seed``, its norms' scales and shifts drawn at random
    too (N(0, 0.3^2)), so that no norm is the identity map of its initialisation."""
    with runtime.seeded(seed):
        block = ModernBlock(kind, cfg.d + 1, cfg.width, cfg.heads, cfg.d_k, act=act)
        with torch.no_grad():
            for module in block.modules():
                if isinstance(module, (RMSNorm, nn.LayerNorm)):
                    module.weight.add_(0.3 * torch.randn_like(module.weight))
                    if getattr(module, "bias", None) is not None:
                        module.bias.add_(0.3 * torch.randn_like(module.bias))
    return block.to(dtype)
