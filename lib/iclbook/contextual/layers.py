"""Contextual layers: maps from a sequence ``(B, T, n)`` to the vector at its last position.

Softmax attention (optionally sliding-window), unnormalised linear attention, a tanh RNN, a GRU
and a diagonal state-space layer. Each returns, besides its output, all prefix outputs
``A(c_1..c_i, x)`` (the token-by-token dynamics), all suffix outputs ``A(c_i..c_N, x)`` (App. B)
and its causal output at every position (a query other than the last, stacked blocks).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iclbook.contextual.config import Config
from iclbook.contextual.data import join


class ContextualLayer(nn.Module):
    """A map from a sequence ``(B, T, n)`` to the vector at its last position ``(B, m)``.

    Subclasses implement :meth:`forward`; :meth:`prefixes` and :meth:`suffixes` have generic
    (quadratic-time) versions here that subclasses may replace by faster exact ones.
    """

    d_in: int
    d_out: int

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``A(c_1..c_i, x)`` for ``i = 0..N`` as ``(B, N + 1, m)``; index 0 is ``A(x)``."""
        return torch.stack([self(join(context[:, :i], query)) for i in range(context.shape[1] + 1)], dim=1)

    def causal(self, seq: torch.Tensor) -> torch.Tensor:
        """The output at every position ``t`` after reading tokens ``1..t``: ``(B, T, m)``."""
        return torch.stack([self(seq[:, : t + 1]) for t in range(seq.shape[1])], dim=1)

    def suffixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``A(c_i..c_N, x)`` for ``i = 1..N + 1`` as ``(B, N + 1, m)``; the last is ``A(x)``."""
        return torch.stack([self(join(context[:, i:], query)) for i in range(context.shape[1] + 1)], dim=1)


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

    def __init__(self, d_in: int, heads: int = 4, d_k: int = 4, d_out: int | None = None, window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__(d_in, heads, d_k, d_out)
        self.window = window

    def weights(self, seq: torch.Tensor) -> torch.Tensor:
        """Attention of the last token over the (windowed) sequence: ``(B, H, T')``."""
        if self.window is not None:
            seq = seq[:, -self.window :]
        q = self._heads(self.q, seq[:, -1])  # (B, H, d_k)
        k = self._heads(self.k, seq)  # (B, T, H, d_k)
        return torch.softmax(torch.einsum("bhe,bthe->bht", q, k) / math.sqrt(self.d_k), dim=-1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        att = self.weights(seq)
        if self.window is not None:
            seq = seq[:, -self.window :]
        v = self._heads(self.v, seq)
        return self.o(torch.einsum("bht,bthe->bhe", att, v).flatten(-2))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Rows of queries ``q (B, R, H, e)`` attending to keys ``k, v (B, T, H, e)`` where
        ``allowed (R, T)`` is True; every row needs one allowed key. Returns ``(B, R, d_out)``.
        A masked softmax: each row is normalised by its own maximum, so no row underflows."""
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, ., e): batched matmuls
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_k)
        att = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1)
        return self.o((att @ v).transpose(1, 2).flatten(-2))

    def _window_mask(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``keys <= rows`` (causal), and within ``window`` of the row when windowed."""
        allowed = keys.unsqueeze(0) <= rows.unsqueeze(1)
        if self.window is not None:
            allowed &= keys.unsqueeze(0) > rows.unsqueeze(1) - self.window
        return allowed

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """All prefix outputs ``A(c_1..c_i, x)``, ``i = 0..N``, in one masked pass: row ``i``
        attends to ``c_1..c_i`` and ``x`` (the last ``window`` of them when windowed)."""
        seq = torch.cat([context, query.unsqueeze(1)], dim=1)  # keys c_1..c_N, x
        N = context.shape[1]
        q = self._heads(self.q, query).unsqueeze(1).expand(-1, N + 1, -1, -1)
        # row i sees the sequence c_1..c_i, x: key j < i of the context, and x (key N) at
        # position i of that sequence; position of context key j is j
        rows = torch.arange(N + 1, device=seq.device)
        keys = torch.arange(N + 1, device=seq.device)
        pos = torch.where(keys.unsqueeze(0) == N, rows.unsqueeze(1), keys.unsqueeze(0))  # (R, T)
        allowed = (pos < rows.unsqueeze(1)) | (keys.unsqueeze(0) == N)
        if self.window is not None:
            allowed &= pos > rows.unsqueeze(1) - self.window
        return self._attend(q, self._heads(self.k, seq), self._heads(self.v, seq), allowed)

    def causal(self, seq: torch.Tensor) -> torch.Tensor:
        """The output at every position ``t``, attending to tokens ``1..t``: ``(B, T, d_out)``."""
        idx = torch.arange(seq.shape[1], device=seq.device)
        return self._attend(
            self._heads(self.q, seq), self._heads(self.k, seq), self._heads(self.v, seq), self._window_mask(idx, idx)
        )


class LinearAttention(_Attention):
    """Unnormalised linear attention read at the last position: ``W_O sum_j v_j (k_j . q) + b_O``.

    The context's contribution grows with its length instead of being averaged: the control that
    shows which part of the "convergence" of the implicit updates comes from softmax averaging.
    """

    def __init__(self, d_in: int, heads: int = 4, d_k: int = 4, d_out: int | None = None):
        super().__init__(d_in, heads, d_k, d_out)

    def value_key_sum(self, seq: torch.Tensor) -> torch.Tensor:
        """``sum_t v_t k_t^T`` per head, ``(B, H, e, e)``: the linear map the sequence applies to
        the query (the dual form of chapter 2, ``dW_ICL = sum_t (W_V c_t)(W_K c_t)^T``)."""
        return torch.einsum("bthe,bthf->bhef", self._heads(self.v, seq), self._heads(self.k, seq))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q, seq[:, -1])  # (B, H, e)
        return self.o(torch.einsum("bhef,bhf->bhe", self.value_key_sum(seq), q).flatten(-2))

    def prefixes(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """All prefix outputs with a cumulative sum (no normalisation, so nothing to underflow)."""
        q = self._heads(self.q, query)  # (B, H, e)
        kc, vc = self._heads(self.k, context), self._heads(self.v, context)
        terms = vc * torch.einsum("bnhe,bhe->bnh", kc, q).unsqueeze(-1)  # (B, N, H, e)
        own = self._heads(self.v, query) * (self._heads(self.k, query) * q).sum(-1, keepdim=True)
        cum = torch.cat([torch.zeros_like(terms[:, :1]), torch.cumsum(terms, 1)], 1)
        return self.o((cum + own.unsqueeze(1)).flatten(-2))


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

    def causal(self, seq: torch.Tensor) -> torch.Tensor:
        """The readout after each token: ``(B, T, m)``."""
        return self.readout(self.states(seq)[:, 1:])

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
