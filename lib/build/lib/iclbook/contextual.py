"""Contextual blocks (Dherin et al., 2025): the context acts as a rank-1 update of the MLP.

A *contextual layer* ``A`` maps a sequence to the vector at its last position; ``A(C, x)`` is its
output at the query ``x`` after the context ``C = [c_1, ..., c_n]`` and ``A(x)`` its output on the
query alone. A *contextual block* feeds that vector to an MLP whose first dense layer is
``W``: ``T_W(C, x) = f(W A(C, x) + b)``. Theorem 2.2 of the paper (v1 numbering) says

    T_W(C, x) = T_{W + dW}(x),    dW = (W dA) A(x)^T / ||A(x)||^2,   dA = A(C, x) - A(x),

for any layer ``A`` and any ``f``: the context can be traded for a rank-1 patch of ``W``. With
skip connections (App. A) the block also needs a bias shift ``db' = dA`` on the MLP's output.

This module holds, top to bottom:

1. the data: in-context linear regression prompts with concatenated ``[x; y]`` tokens;
2. contextual layers: softmax attention (optionally sliding-window), unnormalised linear
   attention, a tanh RNN, a GRU and a diagonal state-space layer, each able to return all
   prefix outputs ``A(c_1..c_i, x)`` and suffix outputs ``A(c_i..c_n, x)``;
3. the block, in three variants (no skip, skip connections, GPT-style pre-LN);
4. the paper's formulas: the rank-1 update, the patch of a block, Prop. 3.1's token-by-token
   dynamics, App. B's product form;
5. the experiments the chapter runs, as functions that return numbers (never plots).

Shapes: ``B`` prompts, ``N`` context tokens, ``n`` token size (``d + 1``), ``m`` the size of the
layer's output, ``h`` the MLP width. All identities are meant to be checked in float64.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from iclbook import runtime, train

Variant = Literal["plain", "skip", "preln"]

# ---------------------------------------------------------------------------------------------
# 0. Configurations, one per profile
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Every size of chapter 4 in one place; the chapter reads ``CONFIGS[profile]``.

    The task follows the paper's v1 Section 4 as reconstructed in the spec (d=2, N=50,
    concatenated tokens). The paper does not give the architecture or the optimiser; the values
    below are the spec's recommendation (4 heads of key size 4, MLP 3->64->3 with GELU,
    Adam 1e-3, batch 64).
    """

    d: int = 2  # input dimension of the regression task; tokens have d + 1 entries
    N: int = 50  # context pairs per prompt
    heads: int = 4
    d_k: int = 4  # key/value size per head
    width: int = 64  # MLP hidden width h
    steps: int = 3000  # training steps of the main block
    batch: int = 64
    lr: float = 1e-3
    seeds: int = 3  # ensemble members (seeds) trained as one batched model
    checkpoint_every: int = 100
    n_val: int = 512  # validation prompts at each checkpoint
    variant_steps: int = 1000  # training steps of the skip and pre-LN blocks
    n_partial: int = 20  # |Y| in the partial-context experiment
    n_tasks: int = 100  # prompts for the convergence and fine-tuning experiments
    ft_lr: float = 0.01  # SGD learning rate of the fine-tuning comparison (the paper's)
    n_ft_tasks: int = 1000  # tasks of the fine-tuning comparison (the paper: 100; more for power)
    layer_steps: int = 300  # brief training of the non-attention layers
    layer_lr: float = 3e-3
    # A pass criterion that depends on the profile: after training, the loss with the context must
    # be below this fraction of the loss on the query alone, for every seed (book: ~0.06 measured).
    icl_ratio: float = 0.15
    rnn_hidden: int = 16
    window: int = 8  # sliding-window attention width


CONFIGS: dict[str, Config] = {
    "smoke": Config(steps=300, seeds=2, checkpoint_every=50, n_val=128, variant_steps=100,
                    layer_steps=20, icl_ratio=0.5),
    "book": Config(),
    "paper": Config(steps=20000, batch=256, seeds=5, checkpoint_every=500, n_val=2048,
                    variant_steps=5000, n_tasks=1000, n_ft_tasks=5000, layer_steps=3000, icl_ratio=0.1),
}

# ---------------------------------------------------------------------------------------------
# 1. Data: in-context linear regression with concatenated tokens
# ---------------------------------------------------------------------------------------------


def sample_prompts(
    n_prompts: int, *, N: int, d: int, generator: torch.Generator, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of in-context linear regression (Garg et al. 2022; tokens as in von Oswald et al.).

    For each prompt ``w ~ N(0, I_d)``, ``x_1..x_N, x_q ~ N(0, I_d)`` and ``y_i = <w, x_i>``.

    Returns
    -------
    tokens : (n_prompts, N + 1, d + 1)
        rows ``[x_i, y_i]`` for the context, then the query row ``[x_q, 0]``.
    target : (n_prompts,)
        ``<w, x_q>``.
    """
    if n_prompts < 1 or N < 0 or d < 1:
        raise ValueError(f"need n_prompts >= 1, N >= 0, d >= 1; got {n_prompts}, {N}, {d}")
    w = torch.randn(n_prompts, d, generator=generator, dtype=dtype)
    x = torch.randn(n_prompts, N + 1, d, generator=generator, dtype=dtype)
    y = torch.einsum("bnd,bd->bn", x, w)
    tokens = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    tokens[:, -1, -1] = 0.0
    return tokens, y[:, -1].clone()


def split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context (B, N, n), query (B, n))`` from a prompt ``(B, N + 1, n)``."""
    if tokens.dim() != 3 or tokens.shape[1] < 1:
        raise ValueError(f"tokens must be (batch, N + 1, n), got {tuple(tokens.shape)}")
    return tokens[:, :-1], tokens[:, -1]


def join(context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The prompt ``[context; query]`` of shape ``(B, N + 1, n)``."""
    return torch.cat([context, query.unsqueeze(1)], dim=1)


# ---------------------------------------------------------------------------------------------
# 2. Contextual layers
# ---------------------------------------------------------------------------------------------


class ContextualLayer(nn.Module):
    """A map from a sequence ``(B, T, n)`` to the vector at its last position ``(B, m)``.

    Subclasses implement :meth:`forward`; :meth:`prefixes` and :meth:`suffixes` have generic
    (quadratic-time) versions here that subclasses may replace by faster exact ones.
    """

    d_in: int
    d_out: int

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``A(c_1..c_i, x)`` for ``i = 0..N`` as ``(B, N + 1, m)``; index 0 is ``A(x)``."""
        return torch.stack(
            [self(join(context[:, :i], query)) for i in range(context.shape[1] + 1)], dim=1
        )

    def suffixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``A(c_i..c_N, x)`` for ``i = 1..N + 1`` as ``(B, N + 1, m)``; the last is ``A(x)``."""
        return torch.stack(
            [self(join(context[:, i:], query)) for i in range(context.shape[1] + 1)], dim=1
        )


class _Attention(ContextualLayer):
    """Shared parts of the attention layers: ``heads`` bias-free query/key/value maps of size
    ``d_k`` and a biased output projection to ``d_out``."""

    def __init__(self, d_in: int, heads: int, d_k: int, d_out: int | None):
        super().__init__()
        if heads < 1 or d_k < 1:
            raise ValueError(f"need heads >= 1 and d_k >= 1, got {heads}, {d_k}")
        self.d_in, self.d_out, self.heads, self.d_k = d_in, d_out or d_in, heads, d_k
        self.q = nn.Linear(d_in, heads * d_k, bias=False)
        self.k = nn.Linear(d_in, heads * d_k, bias=False)
        self.v = nn.Linear(d_in, heads * d_k, bias=False)
        self.o = nn.Linear(heads * d_k, self.d_out)

    def _heads(self, proj: nn.Linear, seq: torch.Tensor) -> torch.Tensor:
        return proj(seq).unflatten(-1, (self.heads, self.d_k))  # (..., H, d_k)


class SoftmaxAttention(_Attention):
    """Multi-head softmax self-attention read at the last position.

    Bias-free query/key/value maps (``heads`` heads of size ``d_k``), scores scaled by
    ``1/sqrt(d_k)``, then a biased output projection to ``d_out``. With ``window`` set, the last
    token attends only to the last ``window`` tokens (itself included): sliding-window attention.
    On the query alone the softmax has one key, so ``A(x) = W_O W_V x + b_O``.
    """

    def __init__(self, d_in: int, heads: int = 4, d_k: int = 4, d_out: int | None = None,
                 window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__(d_in, heads, d_k, d_out)
        self.window = window

    def weights(self, seq: torch.Tensor) -> torch.Tensor:
        """Attention of the last token over the (windowed) sequence: ``(B, H, T')``."""
        if self.window is not None:
            seq = seq[:, -self.window:]
        q = self._heads(self.q, seq[:, -1])  # (B, H, d_k)
        k = self._heads(self.k, seq)  # (B, T, H, d_k)
        return torch.softmax(torch.einsum("bhe,bthe->bht", q, k) / math.sqrt(self.d_k), dim=-1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        att = self.weights(seq)
        if self.window is not None:
            seq = seq[:, -self.window:]
        v = self._heads(self.v, seq)
        return self.o(torch.einsum("bht,bthe->bhe", att, v).flatten(-2))

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """All prefix outputs in O(N) with cumulative sums (the spec's "prefix trick")::

            A(c_1..c_i, x) = W_O [ (sum_{j<=i} e^{s_j} v_j + e^{s_x} v_x)
                                   / (sum_{j<=i} e^{s_j} + e^{s_x}) ] + b_O
        """
        if self.window is not None:
            return super().prefixes(context, query)
        q = self._heads(self.q, query)  # (B, H, e)
        kc, vc = self._heads(self.k, context), self._heads(self.v, context)  # (B, N, H, e)
        kx, vx = self._heads(self.k, query), self._heads(self.v, query)  # (B, H, e)
        s = torch.einsum("bhe,bnhe->bnh", q, kc) / math.sqrt(self.d_k)  # (B, N, H)
        sx = (q * kx).sum(-1) / math.sqrt(self.d_k)  # (B, H)
        shift = torch.maximum(sx, s.amax(dim=1)) if s.shape[1] else sx  # stable exponentials
        ec, ex = torch.exp(s - shift.unsqueeze(1)), torch.exp(sx - shift)
        B, _, H, e = vc.shape
        num = torch.cat([vc.new_zeros(B, 1, H, e), torch.cumsum(ec.unsqueeze(-1) * vc, 1)], 1)
        den = torch.cat([ec.new_zeros(B, 1, H), torch.cumsum(ec, 1)], 1)  # (B, N + 1, H)
        heads = (num + (ex.unsqueeze(-1) * vx).unsqueeze(1)) / (den + ex.unsqueeze(1)).unsqueeze(-1)
        return self.o(heads.flatten(-2))


class LinearAttention(_Attention):
    """Unnormalised linear attention read at the last position: ``W_O sum_j v_j (k_j . q) + b_O``.

    The context's contribution grows with its length instead of being averaged: the control that
    shows which part of the "convergence" of the implicit updates comes from softmax averaging.
    """

    def __init__(self, d_in: int, heads: int = 4, d_k: int = 4, d_out: int | None = None):
        super().__init__(d_in, heads, d_k, d_out)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q, seq[:, -1])  # (B, H, e)
        k, v = self._heads(self.k, seq), self._heads(self.v, seq)  # (B, T, H, e)
        return self.o(torch.einsum("bthe,bth->bhe", v, torch.einsum("bthe,bhe->bth", k, q)).flatten(-2))


class Recurrent(ContextualLayer):
    """Base of the recurrent layers: ``A(C, x)`` is the state after reading ``c_1..c_n`` then
    ``x``, from a zero initial state, passed through :meth:`readout`."""

    state_size: int

    def cell(self, token: torch.Tensor, state: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def states(self, seq: torch.Tensor) -> torch.Tensor:
        """States ``(B, T + 1, state)`` after reading ``0..T`` tokens."""
        state = seq.new_zeros(seq.shape[0], self.state_size)
        out = [state]
        for t in range(seq.shape[1]):
            state = self.cell(seq[:, t], state)
            out.append(state)
        return torch.stack(out, dim=1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.readout(self.states(seq)[:, -1])

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """O(N): read the context once, then apply the query step to every intermediate state."""
        states = self.states(context)  # (B, N + 1, state)
        B, T, S = states.shape
        q = query.unsqueeze(1).expand(B, T, query.shape[-1]).reshape(B * T, -1)
        return self.readout(self.cell(q, states.reshape(B * T, S))).reshape(B, T, -1)


class TanhRNN(Recurrent):
    """Elman RNN ``s_t = tanh(W_x c_t + W_s s_{t-1} + b)``."""

    def __init__(self, d_in: int, hidden: int = 16):
        super().__init__()
        self.d_in = d_in
        self.d_out = self.state_size = hidden
        self.inp = nn.Linear(d_in, hidden)
        self.rec = nn.Linear(hidden, hidden, bias=False)

    def cell(self, token: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.inp(token) + self.rec(state))


class GRU(Recurrent):
    """A gated recurrent unit (``torch.nn.GRUCell``)."""

    def __init__(self, d_in: int, hidden: int = 16):
        super().__init__()
        self.d_in = d_in
        self.d_out = self.state_size = hidden
        self.gru = nn.GRUCell(d_in, hidden)

    def cell(self, token: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.gru(token, state)


class DiagonalSSM(Recurrent):
    """A diagonal state-space layer with input-dependent decay (a Mamba-like selective scan):
    ``s_t = sigmoid(W_a c_t + b_a) * s_{t-1} + W_b c_t``, read out by ``W_c s + b_c``."""

    def __init__(self, d_in: int, state: int = 16, d_out: int | None = None):
        super().__init__()
        self.d_in, self.d_out, self.state_size = d_in, d_out or d_in, state
        self.decay = nn.Linear(d_in, state)
        self.inp = nn.Linear(d_in, state, bias=False)
        self.out = nn.Linear(state, self.d_out)

    def cell(self, token: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decay(token)) * state + self.inp(token)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.out(state)


def make_layer(kind: str, d_in: int, cfg: Config) -> ContextualLayer:
    """A contextual layer by name: ``softmax``, ``window``, ``linear``, ``rnn``, ``gru``, ``ssm``."""
    makers = {
        "softmax": lambda: SoftmaxAttention(d_in, cfg.heads, cfg.d_k),
        "window": lambda: SoftmaxAttention(d_in, cfg.heads, cfg.d_k, window=cfg.window),
        "linear": lambda: LinearAttention(d_in, cfg.heads, cfg.d_k),
        "rnn": lambda: TanhRNN(d_in, cfg.rnn_hidden),
        "gru": lambda: GRU(d_in, cfg.rnn_hidden),
        "ssm": lambda: DiagonalSSM(d_in, cfg.rnn_hidden),
    }
    if kind not in makers:
        raise ValueError(f"unknown layer kind {kind!r}; choose from {sorted(makers)}")
    return makers[kind]()


# ---------------------------------------------------------------------------------------------
# 3. The contextual block
# ---------------------------------------------------------------------------------------------


class ContextualBlock(nn.Module):
    """A contextual layer followed by an MLP ``W2 gelu(W u + b) + b2``, read at the last token.

    ``variant``
        ``"plain"``  ``T(C,x) = MLP(A(C,x))``: no skip, no LayerNorm (the paper's main text);
        ``"skip"``   ``T(C,x) = x + A(C,x) + MLP(A(C,x))`` (App. A);
        ``"preln"``  GPT-style: ``z = x + A(LN1([C,x]))``, ``T = z + MLP(LN2(z))``.

    The MLP's input ``u`` and the residual stream ``z`` it is added to are observable through
    :meth:`mlp_input`, and :meth:`head` runs the rest of the block with an overridable first
    weight ``W`` (one per prompt allowed) and an optional output bias shift. ``forward`` is
    literally ``head(*mlp_input(seq))``, so a patched prediction runs the very same code.
    The prediction of the regression task is the last coordinate of the output.
    """

    def __init__(self, layer: ContextualLayer, width: int = 64, variant: Variant = "plain",
                 d_model: int | None = None):
        super().__init__()
        if variant not in ("plain", "skip", "preln"):
            raise ValueError(f"variant must be 'plain', 'skip' or 'preln', got {variant!r}")
        d_model = d_model or layer.d_in
        if variant != "plain" and layer.d_out != d_model:
            raise ValueError(f"a skip connection needs d_out == d_model, got {layer.d_out} != {d_model}")
        self.layer, self.variant, self.d_model = layer, variant, d_model
        self.fc1 = nn.Linear(layer.d_out, width)  # W, b: the weight the context patches
        self.fc2 = nn.Linear(width, d_model)  # W', b'
        if variant == "preln":
            self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    @property
    def W(self) -> torch.Tensor:
        """The MLP's first weight matrix ``(h, m)``."""
        return self.fc1.weight

    def mlp_input(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, z)`` at the last position: the MLP's input ``(B, m)`` and the residual stream
        ``(B, d_model)`` that the MLP's output is added to (zeros for ``"plain"``)."""
        if self.variant == "preln":
            z = seq[:, -1] + self.layer(self.ln1(seq))
            return self.ln2(z), z
        a = self.layer(seq)
        if self.variant == "skip":
            return a, seq[:, -1] + a
        return a, a.new_zeros(a.shape[0], self.d_model)

    def mlp_inputs_prefix(self, context: torch.Tensor, query: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mlp_input` of every prefix prompt ``[c_1..c_i, x]``, ``i = 0..N``:
        ``(B, N + 1, m)`` and ``(B, N + 1, d_model)``."""
        if self.variant == "preln":
            z = query.unsqueeze(1) + self.layer.prefixes(self.ln1(context), self.ln1(query))
            return self.ln2(z), z
        a = self.layer.prefixes(context, query)
        if self.variant == "skip":
            return a, query.unsqueeze(1) + a
        return a, a.new_zeros(*a.shape[:2], self.d_model)

    def head(self, u: torch.Tensor, z: torch.Tensor, W: torch.Tensor | None = None,
             bias_shift: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output from its MLP input: ``z + W2 gelu(W u + b) + b2 (+ bias_shift)``.

        ``W`` is ``(h, m)`` or one matrix per prompt ``(..., h, m)``; ``u`` is ``(..., m)``.
        """
        W = self.fc1.weight if W is None else W
        pre = torch.einsum("...hm,...m->...h", W, u) + self.fc1.bias
        out = self.fc2(F.gelu(pre))
        if self.variant != "plain":
            out = out + z
        if bias_shift is not None:
            out = out + bias_shift
        return out

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Prediction ``(B,)``: the last coordinate of the block's output at the query."""
        return self.head(*self.mlp_input(seq))[..., -1]


def make_block(kind: str, cfg: Config, variant: Variant = "plain", *, seed: int,
               dtype=torch.float64) -> ContextualBlock:
    """A block with a ``kind`` layer (see :func:`make_layer`), initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = ContextualBlock(make_layer(kind, cfg.d + 1, cfg), cfg.width, variant)
    return block.to(dtype)


def mse(block: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the block's prediction on ``(tokens, target)``: the training loss.
    A model that ignores the context and predicts 0 scores ``E[<w, x_q>^2] = d``."""
    tokens, target = batch
    return ((block(tokens) - target) ** 2).mean()


# ---------------------------------------------------------------------------------------------
# 4. The paper's formulas
# ---------------------------------------------------------------------------------------------


def rank_one_update(W: torch.Tensor, a_full: torch.Tensor, a_reduced: torch.Tensor) -> torch.Tensor:
    """Theorem 2.2's patch ``dW = (W (a_full - a_reduced)) a_reduced^T / ||a_reduced||^2``.

    ``W`` is ``(h, m)``; ``a_full = A(C, x)`` and ``a_reduced = A(C \\ Y, x)`` are ``(..., m)``.
    Returns ``(..., h, m)``, one rank-1 matrix per prompt (never averaged over prompts: the patch
    is specific to its query). By construction ``(W + dW) a_reduced = W a_full``. It is the
    minimum-Frobenius-norm matrix with that property.

    Raises ValueError for mismatched shapes or a zero ``a_reduced`` (the patch is undefined).
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (h, m), got shape {tuple(W.shape)}")
    if a_full.shape != a_reduced.shape:
        raise ValueError(f"A(C,x) and A(C\\Y,x) differ in shape: {tuple(a_full.shape)} vs {tuple(a_reduced.shape)}")
    if a_full.shape[-1] != W.shape[1]:
        raise ValueError(f"W is {tuple(W.shape)} but the layer outputs have size {a_full.shape[-1]}")
    sq = (a_reduced * a_reduced).sum(-1)
    if bool((sq == 0).any()):
        raise ValueError("A(C\\Y, x) is zero for some prompt: the rank-1 update is undefined")
    u = torch.einsum("hm,...m->...h", W, a_full - a_reduced)
    return u.unsqueeze(-1) * (a_reduced / sq.unsqueeze(-1)).unsqueeze(-2)


@dataclass
class Patch:
    """The implicit update of a block: ``dW`` ``(B, h, m)`` and, with skips, ``db`` ``(B, d_model)``."""

    dW: torch.Tensor
    db: torch.Tensor | None


def implicit_patch(block: ContextualBlock, full: torch.Tensor, reduced: torch.Tensor) -> Patch:
    """The patch that makes ``block`` on ``reduced`` (the prompt without ``Y``) reproduce ``block``
    on ``full``: Theorem 2.2 for the plain block, with App. A's ``db' = dA`` (``= z_C - z_x``)
    for the skip and pre-LN blocks. Both prompts must end with the same query token."""
    if not torch.equal(full[:, -1], reduced[:, -1]):
        raise ValueError("the full and reduced prompts must end with the same query token")
    u_full, z_full = block.mlp_input(full)
    u_red, z_red = block.mlp_input(reduced)
    dW = rank_one_update(block.W, u_full, u_red)
    return Patch(dW, None if block.variant == "plain" else z_full - z_red)


def patched_output(block: ContextualBlock, reduced: torch.Tensor, patch: Patch,
                   use_bias: bool = True) -> torch.Tensor:
    """The block's output ``(B, d_model)`` on ``reduced`` with ``W + dW`` (and ``b' + db``)."""
    u, z = block.mlp_input(reduced)
    return block.head(u, z, W=block.W + patch.dW, bias_shift=patch.db if use_bias else None)


def prop31_weights(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """Prop. 3.1's trajectory ``W_i = W0 + dW(c_1..c_i)``, ``i = 0..N``: ``(B, N + 1, h, m)``.

    ``prefixes`` is ``(B, N + 1, m)`` with ``prefixes[:, i] = A(c_1..c_i, x)`` (index 0: ``A(x)``)."""
    a0 = prefixes[:, :1].expand_as(prefixes)
    return W0 + rank_one_update(W0, prefixes, a0)


def prop31_recursion(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """The same trajectory built as gradient steps ``W_{i+1} = W_i - h grad L_i(W_i)`` with
    ``L_i(W) = trace(D_i^T W)``, ``D_i = W0 (A_i - A_{i+1}) A(x)^T`` and ``h = 1/||A(x)||^2``
    (the ``W_{i+1}`` indexing; v1 prints it off by one). Returns ``(B, N + 1, h, m)``."""
    a0 = prefixes[:, 0]
    step = 1.0 / (a0 * a0).sum(-1)  # h, (B,)
    W = W0.expand(prefixes.shape[0], *W0.shape)
    out = [W]
    for i in range(prefixes.shape[1] - 1):
        grad = torch.einsum("hm,bm,bn->bhn", W0, prefixes[:, i] - prefixes[:, i + 1], a0)  # D_i
        W = W - step[:, None, None] * grad
        out.append(W)
    return torch.stack(out, dim=1)


def update_increments(W0: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """``||W_{i+1} - W_i||_2`` for ``i = 0..N-1`` as ``(B, N)``: each increment is rank 1, so its
    spectral and Frobenius norms both equal ``||W0 (A_{i+1} - A_i)|| / ||A(x)||``."""
    diff = torch.einsum("hm,bim->bih", W0, prefixes[:, 1:] - prefixes[:, :-1])
    return diff.norm(dim=-1) / prefixes[:, :1].norm(dim=-1)


def appendix_b_weights(W0: torch.Tensor, suffixes: torch.Tensor) -> torch.Tensor:
    """App. B's "front-consumption" update ``W_n = W0 (I + h_1 A_1) ... (I + h_n A_n)``.

    ``suffixes`` is ``(B, N + 1, m)`` with ``suffixes[:, i - 1] = A(c_i..c_N, x)`` (last: ``A(x)``);
    ``A_i = (S_i - S_{i+1}) S_{i+1}^T`` and ``h_i = 1 / ||S_{i+1}||^2``. Returns ``(B, h, m)``.
    """
    B, T, m = suffixes.shape
    prod = torch.eye(m, dtype=suffixes.dtype).expand(B, m, m)
    for i in range(T - 1):
        nxt = suffixes[:, i + 1]
        factor = torch.eye(m, dtype=suffixes.dtype) + (
            (suffixes[:, i] - nxt).unsqueeze(-1) * nxt.unsqueeze(-2) / (nxt * nxt).sum(-1)[:, None, None]
        )
        prod = prod @ factor
    return W0 @ prod


def rank_ratio(M: torch.Tensor) -> torch.Tensor:
    """``sigma_2 / sigma_1`` of each matrix in ``(..., h, m)``: 0 for an exact rank-1 matrix."""
    s = torch.linalg.svdvals(M)
    return s[..., 1] / s[..., 0]


# ---------------------------------------------------------------------------------------------
# 5. Experiments (numbers only; the chapter draws the figures)
# ---------------------------------------------------------------------------------------------


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
def partial_check(block: ContextualBlock, tokens: torch.Tensor, n_removed: int,
                  generator: torch.Generator) -> dict:
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
    """Prop. 3.1 (token-by-token gradient steps) and App. B (product form) on a plain block."""
    if block.variant != "plain":
        raise ValueError("dynamics_check is written for the plain block")
    context, query = split(tokens)
    W0 = block.W
    pre = block.layer.prefixes(context, query)  # (B, N + 1, m)
    closed = prop31_weights(W0, pre)
    recursive = prop31_recursion(W0, pre)
    WN = closed[:, -1]
    u0, z0 = block.mlp_input(query.unsqueeze(1))
    y_ctx = block(tokens)
    y_31 = block.head(u0, z0, W=WN)[:, -1]
    # each prefix too: T_{W_i}(x) == T_W(c_1..c_i, x)
    y_prefix_ctx = block.head(pre, torch.zeros_like(pre))[..., -1]
    y_prefix_31 = block.head(u0.unsqueeze(1).expand_as(pre), None, W=closed)[..., -1]
    WB = appendix_b_weights(W0, block.layer.suffixes(context, query))
    y_B = block.head(u0, z0, W=WB)[:, -1]
    direct_prefix = torch.stack([block.layer(join(context[:, :i], query)) for i in (0, 1, context.shape[1] // 2)], 1)
    return {
        "recursion_gap": float((closed - recursive).abs().max()),
        "prop31_gap": float((y_ctx - y_31).abs().max()),
        "prefix_gap": float((y_prefix_ctx - y_prefix_31).abs().max()),
        "prefix_trick_gap": float((direct_prefix - pre[:, [0, 1, context.shape[1] // 2]]).abs().max()),
        "rank_ratio": float(rank_ratio(WN - W0).max()),
        "appB_gap": float((y_ctx - y_B).abs().max()),
        "appB_vs_31_max_entry": float((WB - WN).abs().max()),
        "norm_31": (WN - W0).flatten(1).norm(dim=1),
        "norm_B": (WB - W0).flatten(1).norm(dim=1),
        "appB_rank": torch.linalg.matrix_rank(WB - W0, rtol=1e-10),
    }


@torch.no_grad()
def convergence_curve(block: ContextualBlock, tokens: torch.Tensor) -> torch.Tensor:
    """``||dW_{i+1} - dW_i||_2`` for ``i = 0..N-1`` per prompt, ``(B, N)``: the paper's Fig. 2."""
    if block.variant != "plain":
        raise ValueError("convergence_curve is written for the plain block")
    context, query = split(tokens)
    return update_increments(block.W, block.layer.prefixes(context, query))


def loglog_slope(i: torch.Tensor, values: torch.Tensor) -> float:
    """Least-squares slope of ``log(values)`` against ``log(i)``."""
    x, y = torch.log(i.double()), torch.log(values.double())
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def finetune_comparison(block: ContextualBlock, tokens: torch.Tensor, target: torch.Tensor,
                        lr: float) -> dict:
    """The paper's Fig. 3: implicit ``dW`` against explicit fine-tuning, per prompt and step.

    *Implicit:* the test loss of ``T_W(c_1..c_i, x_q)`` (equal to ``T_{W + dW(c_1..c_i)}(x_q)``).
    *Explicit:* from ``W``, ``i`` plain SGD steps (rate ``lr``, one context example per step, in
    order) on ``(T_W([x_j; 0]) - y_j)^2 / 2`` with only ``W`` trainable, each task separately;
    then the test loss on ``x_q``. Also the cosine (normalised Frobenius inner product) between
    the two updates ``W_i^ft - W`` and ``dW(c_1..c_i)``.

    Returns tensors of shape ``(B, N + 1)`` for ``i = 0..N``: ``loss_dw``, ``loss_ft``, ``cosine``
    (``cosine[:, 0]`` is NaN: both updates are zero).
    """
    if block.variant != "plain":
        raise ValueError("finetune_comparison is written for the plain block")
    context, query = split(tokens)
    B, N, _ = context.shape
    W0 = block.W.detach()
    with torch.no_grad():
        pre = block.layer.prefixes(context, query)
        dWs = prop31_weights(W0, pre) - W0  # (B, N + 1, h, m)
        u0, z0 = block.mlp_input(query.unsqueeze(1))
        loss_dw = (block.head(pre, None)[..., -1] - target[:, None]) ** 2
        # the same losses through the patch, to show they coincide
        loss_dw_patch = (block.head(u0.unsqueeze(1).expand_as(pre), None, W=W0 + dWs)[..., -1]
                         - target[:, None]) ** 2
        # the inputs of the query-only fine-tuning prompts [x_j; 0] do not depend on W
        ft_tokens = context.clone()
        ft_tokens[..., -1] = 0.0
        u_ft = torch.stack([block.mlp_input(ft_tokens[:, j:j + 1])[0] for j in range(N)], 1)
    W = W0.expand(B, *W0.shape).clone()
    loss_ft, cos = [], []
    for i in range(N + 1):
        with torch.no_grad():
            loss_ft.append((block.head(u0, None, W=W)[:, -1] - target) ** 2)
            a, b = (W - W0).flatten(1), dWs[:, i].flatten(1)
            cos.append((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))
        if i == N:
            break
        W.requires_grad_(True)
        pred = block.head(u_ft[:, i], None, W=W)[:, -1]
        loss = 0.5 * ((pred - context[:, i, -1]) ** 2).sum()  # a sum: each task its own gradient
        (grad,) = torch.autograd.grad(loss, W)
        W = (W - lr * grad).detach()
    return {
        "loss_dw": loss_dw,
        "loss_dw_patch": loss_dw_patch,
        "loss_ft": torch.stack(loss_ft, 1),
        "cosine": torch.stack(cos, 1),
    }


# ---------------------------------------------------------------------------------------------
# 6. Training (through the shared loop and the weight cache)
# ---------------------------------------------------------------------------------------------


def train_blocks(cfg: Config, seeds: list[int], *, kind: str = "softmax",
                 variant: Variant = "plain", steps: int | None = None, lr: float | None = None,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 desc: str | None = None) -> tuple[list[ContextualBlock], dict]:
    """Train one block per seed on fresh regression prompts, all seeds as one batched ensemble.

    Each member is initialised from its seed and draws its own training prompts. With ``val``,
    :func:`theorem_check` runs on it for every member every ``cfg.checkpoint_every`` steps, so the
    history holds the paper's Fig. 1 (``history["checkpoints"][k]["members"]``). Weights and
    history go through the trained-weight cache (:func:`iclbook.runtime.cached`).
    """
    if not seeds:
        raise ValueError("need at least one seed")
    steps = cfg.steps if steps is None else steps
    lr = cfg.lr if lr is None else lr
    models = [make_block(kind, cfg, variant, seed=s) for s in seeds]

    def sample(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_prompts(cfg.batch, N=cfg.N, d=cfg.d, generator=gen)

    def on_checkpoint(step: int, members: list[nn.Module]) -> dict:
        return {"members": [theorem_check(m, *val) for m in members]}

    def run() -> dict:
        return train.train(
            models, mse, sample, steps=steps, lr=lr,
            generators=[runtime.generator(s + 7919) for s in seeds],
            checkpoint_every=cfg.checkpoint_every if val is not None else None,
            on_checkpoint=on_checkpoint if val is not None else None,
            desc=desc or f"{kind}/{variant}",
        )

    val_digest = None if val is None else float(val[0].sum() + val[1].sum())
    history = train.cached_training("04", f"{kind}-{variant}", cfg, models, run, seeds=list(seeds),
                                    steps=steps, lr=lr, val=val_digest)
    return models, history


def replace(cfg: Config, **changes) -> Config:
    """A copy of ``cfg`` with ``changes`` (``dataclasses.replace``, re-exported for chapters)."""
    return dataclasses.replace(cfg, **changes)
