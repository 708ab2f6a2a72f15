"""A tiny GPT for Dai et al. (2023): pre-LayerNorm blocks, tied input/output embeddings, and
attention projections named ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (so the paper's
finetuning filter, "train the parameters whose name contains k_proj or v_proj", and the recording
hooks of :mod:`.probe` work unchanged on this model and on a Hugging Face model).

Two departures from the fairseq GPTs of the paper (the chapter and
``benchmarks/implicit_ablation.py`` show why):

* **Token mixing** before attention: a causal depthwise convolution of width ``mix`` (3), so every
  position reads its two predecessors, as the shift operators of H3 (Fu et al. 2023) do. Keys,
  queries and values are still linear maps of the attention's input; only that input is mixed.
  ``mix=0`` switches it off.
* **ALiBi** (Press et al. 2022): each head adds ``-m_h (t - i)`` to its score from position ``t``
  to position ``i`` (``m_h = 2^(-8h/H)``) instead of adding position embeddings to the input
  (the ablation found it unnecessary; the shipped model was trained with it);
  ``positions="sinusoidal"`` gives the fairseq-style embeddings back.

Momentum attention (the paper's Eq. 15) is a switch: with ``momentum = eta > 0`` each head adds
``sum_{i<t} eta^(t-i) v_i`` (unnormalised, current token excluded) to its softmax output. The
pretraining recipe and the shipped checkpoints are in :mod:`.pretrain`.

Example::

    model = TinyLM(LMConfig())
    logits = model(tokens)                 # (batch, tokens, vocab)
    past = model.remember(prefix)          # (1, p): run the shared demonstrations once
    logits = model(queries, past=past)     # = the query rows of model(prefix + queries)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from iclbook.implicit import data


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the tiny language model."""

    vocab: int = len(data.VOCAB)
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    d_ff: int = 256
    max_len: int = 256
    momentum: float = 0.0  # eta of momentum attention; 0 = ordinary attention
    positions: str = "alibi"  # "alibi" (score bias) or "sinusoidal" (added to the input)
    mix: int = 3  # width of the causal token-mixing convolution; 0 = none

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum eta must be in [0, 1), got {self.momentum}")
        if self.positions not in ("alibi", "sinusoidal"):
            raise ValueError(f"positions must be 'alibi' or 'sinusoidal', got {self.positions!r}")
        if self.mix < 0:
            raise ValueError(f"mix must be >= 0, got {self.mix}")


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """``(n, d)`` fairseq-style sinusoidal position embeddings (sines, then cosines)."""
    half = d // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    angle = torch.arange(n, dtype=torch.float64)[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


def alibi_slopes(heads: int) -> torch.Tensor:
    """``(heads,)`` ALiBi slopes ``2^(-8 (h+1) / heads)`` (Press et al. 2022)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def _gaps(n: int, start: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """``(n, start + n)`` distances ``t - i`` from the query at position ``start + row`` to
    every key position ``i``."""
    t = torch.arange(start, start + n, device=device)
    return (t[:, None] - torch.arange(start + n, device=device)[None, :]).to(dtype)


def score_bias(slopes: torch.Tensor, n: int, dtype: torch.dtype = torch.float32, start: int = 0) -> torch.Tensor:
    """``(heads, n, start + n)`` additive causal ALiBi bias: ``-m_h (t - i)`` for ``i <= t``,
    ``-inf`` above the diagonal, for queries at positions ``start .. start + n - 1`` (``start``:
    the length of a cached prefix) over keys ``0 .. start + n - 1``."""
    gap = _gaps(n, start, dtype, slopes.device)
    bias = -slopes.to(dtype)[:, None, None] * gap
    return bias.masked_fill(gap < 0, float("-inf"))


def momentum_matrix(n: int, eta: float, dtype: torch.dtype = torch.float32, start: int = 0) -> torch.Tensor:
    """``(n, start + n)`` strictly lower-triangular Toeplitz matrix with entries ``eta^(t-i)``
    for i < t: ``M @ V`` is the momentum term of Eq. 15 for every position at once (rows
    ``start ..``, as :func:`score_bias`)."""
    gap = _gaps(n, start, dtype)
    return torch.where(gap > 0, torch.as_tensor(eta, dtype=dtype) ** gap, torch.zeros((), dtype=dtype))


@dataclass(frozen=True)
class Past:
    """What a continuation needs of an already-run prefix of ``length`` tokens (batch 1): per
    layer, the attention's input before token mixing at the prefix's last ``mix - 1`` positions,
    and the prefix's keys and values ``(1, heads, length, d_h)``. :meth:`TinyLM.remember` makes
    one; ``model(suffix, past=past)`` then equals the suffix rows of ``model(prefix + suffix)``
    (to float rounding) at the cost of the suffix alone, which is what scoring many queries
    after the same demonstrations needs."""

    length: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]


class Attention(nn.Module):
    """Causal multi-head attention with separate, named projections."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        d = cfg.d_model
        self.heads, self.momentum = cfg.heads, cfg.momentum
        self.mix = nn.Conv1d(d, d, cfg.mix, groups=d, bias=False) if cfg.mix else None
        if self.mix is not None:
            nn.init.normal_(self.mix.weight, std=0.1)
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        slopes = alibi_slopes(cfg.heads) if cfg.positions == "alibi" else None
        self.register_buffer("alibi", slopes, persistent=False)

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        """The attention's input after token mixing: ``x_t + sum_j c_j * x_{t-j}`` per channel."""
        if self.mix is None:
            return x
        width = self.mix.kernel_size[0]
        return x + self.mix(F.pad(x.transpose(1, 2), (width - 1, 0))).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x)[0]

    def attend(
        self, x: torch.Tensor, past: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The attention's output on ``x (b, n, d)``, positions following a cached prefix
        ``past`` (one layer of a :class:`Past`, or None), and this layer's state after ``x``
        (for :meth:`TinyLM.remember`)."""
        b, n, d = x.shape
        h = self.heads
        start = 0 if past is None else past[1].shape[2]
        raw = x if past is None else torch.cat([past[0].expand(b, -1, -1), x], 1)
        x = self.mixed(raw)[:, raw.shape[1] - n :]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)  # (b, h, n, d_h)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if past is not None:
            k = torch.cat([past[1].expand(b, -1, -1, -1), k], 2)
            v = torch.cat([past[2].expand(b, -1, -1, -1), v], 2)
        if self.alibi is not None:
            mask = score_bias(self.alibi, n, x.dtype, start)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = _gaps(n, start, x.dtype, x.device) >= 0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if self.momentum > 0:
            out = out + momentum_matrix(n, self.momentum, x.dtype, start).to(x.device) @ v
        width = self.mix.kernel_size[0] if self.mix is not None else 1
        tail = raw[:, raw.shape[1] - min(width - 1, raw.shape[1]) :]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), (tail, k, v)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg)
        self.fc1, self.fc2 = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        a, state = self.self_attn.attend(self.ln1(x), past)
        x = x + a
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)))), state


class TinyLM(nn.Module):
    """``tokens (batch, n) -> logits (batch, n, vocab)``."""

    #: What :meth:`internals` returns (:mod:`iclbook.internals`), stacked over the layers.
    INTERNALS = {
        "x": "(layers, batch, n, d) what each attention layer's projections read (after its LayerNorm)",
        "q": "(layers, batch, n, d) the queries, all heads side by side",
        "k": "(layers, batch, n, d) the keys",
        "out": "(layers, batch, n, d) the attention outputs, after the output projection",
        "logits": "(batch, n, vocab) the model's output",
    }

    def __init__(self, cfg: LMConfig = LMConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        pos = (
            sinusoidal_positions(cfg.max_len, cfg.d_model)
            if cfg.positions == "sinusoidal"
            else torch.zeros(cfg.max_len, cfg.d_model)
        )
        self.register_buffer("positions", pos, persistent=False)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)
        self.scale = math.sqrt(cfg.d_model)

    def forward(self, tokens: torch.Tensor, past: Past | None = None) -> torch.Tensor:
        """Logits of ``tokens (batch, n)``, which follow the cached prefix ``past`` if given."""
        return self.ln_f(self._trunk(tokens, past)[0]) @ self.embed.weight.T

    @torch.no_grad()
    def internals(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of :data:`INTERNALS` on ``tokens (batch, n)``, from one pass (read
        by :class:`iclbook.implicit.probe.Recorder`'s hooks, as for a Hugging Face model)."""
        from iclbook.implicit.probe import Recorder  # noqa: PLC0415 (probe reads models, not the reverse)

        with Recorder(self) as rec:
            logits = self(tokens)
        return {
            "x": torch.stack(rec.x),
            "q": torch.stack(rec.q),
            "k": torch.stack(rec.k),
            "out": torch.stack(rec.out),
            "logits": logits,
        }

    @torch.no_grad()
    def remember(self, tokens: torch.Tensor) -> Past:
        """Run a prefix ``tokens (1, n)`` once and keep what its continuations need."""
        if tokens.dim() != 2 or tokens.shape[0] != 1:
            raise ValueError(f"remember takes one prefix of shape (1, n), got {tuple(tokens.shape)}")
        return Past(tokens.shape[1], tuple(self._trunk(tokens, None)[1]))

    def _trunk(self, tokens: torch.Tensor, past: Past | None) -> tuple[torch.Tensor, list]:
        start = 0 if past is None else past.length
        n = tokens.shape[-1]
        if start + n > self.cfg.max_len:
            raise ValueError(f"sequence of {start + n} tokens is longer than max_len={self.cfg.max_len}")
        x = self.embed(tokens) * self.scale + self.positions[start : start + n]
        states = []
        for i, block in enumerate(self.layers):
            x, state = block(x, None if past is None else past.layers[i])
            states.append(state)
        return x, states
