"""The contextual block ``T_W(C, x) = f(W A(C, x) + b)`` in three variants, and stacks of blocks."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from iclbook import runtime
from iclbook.contextual.config import Config
from iclbook.contextual.layers import ContextualLayer, make_layer
from iclbook.internals import HookPoints

Variant = Literal["plain", "skip", "preln"]


class ContextualBlock(HookPoints, nn.Module):
    """A contextual layer followed by an MLP ``W2 gelu(W u + b) + b2``, read at the last token.

    ``variant``
        ``"plain"``  ``T(C,x) = MLP(A(C,x))``: no skip, no LayerNorm (the paper's main text);
        ``"skip"``   ``T(C,x) = x + A(C,x) + MLP(A(C,x))`` (App. A);
        ``"preln"``  GPT-style: ``z = x + A(LN1([C,x]))``, ``T = z + MLP(LN2(z))``.

    The MLP's input ``u`` and the residual stream ``z`` it is added to are observable through
    :meth:`mlp_input`, and :meth:`head` runs the rest of the block with an overridable first
    weight ``W`` (one per prompt allowed) and an optional output bias shift. ``forward`` is
    literally ``head(*mlp_input(seq))``, so a patched prediction runs the very same code.
    The prediction of the regression task is the last coordinate of the output. Every name of
    :data:`INTERNALS` is a hook point of ``forward`` (:class:`iclbook.internals.HookPoints`): it
    can be recorded, or overridden during a pass.
    """

    #: What :meth:`internals` returns (:mod:`iclbook.internals`), all at the last position.
    INTERNALS = {
        "mlp_input": "(B, m) u: the MLP's input, A(C, x) for the plain block (what W reads)",
        "residual": "(B, d_model) z: the stream the MLP's output is added to (zeros for plain)",
        "pre": "(B, h) W u + b, the first dense layer's pre-activation",
        "output": "(B, d_model) the block's output T_W(C, x)",
        "prediction": "(B,) its last coordinate: the regression prediction (what forward returns)",
    }

    def __init__(self, layer: ContextualLayer, width: int = 64, variant: Variant = "plain", d_model: int | None = None):
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
        self.check_input(seq)
        if self.variant == "preln":
            z = seq[:, -1] + self.layer(self.ln1(seq))
            return self.ln2(z), z
        a = self.layer(seq)
        if self.variant == "skip":
            return a, seq[:, -1] + a
        return a, a.new_zeros(a.shape[0], self.d_model)

    def head(
        self, u: torch.Tensor, z: torch.Tensor, W: torch.Tensor | None = None, bias_shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output from its MLP input: ``z + W2 gelu(W u + b) + b2 (+ bias_shift)``.

        ``W`` is ``(h, m)`` or one matrix per prompt ``(..., h, m)``; ``u`` is ``(..., m)``.
        """
        W = self.fc1.weight if W is None else W
        pre = self.hook("pre", torch.einsum("...hm,...m->...h", W, u) + self.fc1.bias)
        out = self.fc2(F.gelu(pre))
        if self.variant != "plain":
            out = out + z
        if bias_shift is not None:
            out = out + bias_shift
        return out

    def check_input(self, seq: torch.Tensor) -> None:
        """Raise a ValueError unless ``seq`` is a batch of sequences ``(B, T >= 1, n)``."""
        if not isinstance(seq, torch.Tensor):
            raise TypeError(f"a block reads a tensor (batch, tokens, {self.layer.d_in}), got {type(seq).__name__}")
        if seq.dim() != 3:
            hint = {
                1: " (one token? make it a sequence of one in a batch of one: seq.reshape(1, 1, -1))",
                2: " (add a batch dimension: seq.unsqueeze(0))",
            }.get(seq.dim(), " (several batch dimensions? flatten them into one: seq.flatten(0, -3))")
            raise ValueError(
                f"a block reads a 3-D tensor (batch, tokens, {self.layer.d_in}), got {seq.dim()}-D shape "
                f"{tuple(seq.shape)}{hint}"
            )
        if seq.shape[1] < 1 or seq.shape[2] != self.layer.d_in:
            raise ValueError(f"a block reads (batch, tokens >= 1, {self.layer.d_in}), got shape {tuple(seq.shape)}")

    def mlp_input_all(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mlp_input` at every position ``t`` of a causal pass (reading tokens ``1..t``):
        ``(B, T, m)`` and ``(B, T, d_model)``."""
        self.check_input(seq)
        if self.variant == "preln":
            z = seq + self.layer.causal(self.ln1(seq))
            return self.ln2(z), z
        a = self.layer.causal(seq)
        if self.variant == "skip":
            return a, seq + a
        return a, a.new_zeros(*a.shape[:2], self.d_model)

    def _stream(self, a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, z)`` from layer outputs ``a`` ``(..., m)`` at a query token ``x`` ``(..., n)``."""
        if self.variant == "plain":
            return a, a.new_zeros(*a.shape[:-1], self.d_model)
        z = x + a
        return (self.ln2(z) if self.variant == "preln" else a), z

    def mlp_input_prefixes(self, context: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mlp_input` of every prefix prompt ``[c_1..c_i, x]``, ``i = 0..N``: ``u`` ``(B, N + 1, m)``
        and ``z`` ``(B, N + 1, d_model)`` (index 0: the query alone), in one pass of the layer's
        :meth:`~iclbook.contextual.layers.ContextualLayer.prefixes` (LayerNorm acts per token)."""
        ln = self.ln1 if self.variant == "preln" else (lambda t: t)
        a = self.layer.prefixes(ln(context), ln(query))
        return self._stream(a, query.unsqueeze(1))

    def mlp_input_suffixes(self, context: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same for the suffix prompts ``[c_i..c_N, x]``, ``i = 1..N + 1`` (last: the query alone)."""
        ln = self.ln1 if self.variant == "preln" else (lambda t: t)
        a = self.layer.suffixes(ln(context), ln(query))
        return self._stream(a, query.unsqueeze(1))

    def all_positions(self, seq: torch.Tensor) -> torch.Tensor:
        """The block's output at every position ``t`` (reading tokens ``1..t``): ``(B, T, d_model)``.
        The next block of a stack reads this sequence."""
        return self.head(*self.mlp_input_all(seq))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Prediction ``(B,)``: the last coordinate of the block's output at the query."""
        u, z = self.mlp_input(seq)
        out = self.hook("output", self.head(self.hook("mlp_input", u), self.hook("residual", z)))
        return self.hook("prediction", out[..., -1])


def make_block(
    kind: str, cfg: Config, variant: Variant = "plain", *, seed: int, dtype=torch.float64
) -> ContextualBlock:
    """A block with a ``kind`` layer (see :func:`make_layer`), initialised from ``seed``."""
    with runtime.seeded(seed):
        block = ContextualBlock(make_layer(kind, cfg.d + 1, cfg), cfg.width, variant)
    return block.to(dtype)


class BlockStack(nn.Module):
    """Contextual blocks in sequence: block ``l + 1`` reads block ``l``'s output at every position
    (causally), and the prediction is the last coordinate of the last block at the query.

    Each block's MLP input at the query depends on the context only through its own layer, so
    the context can be traded for one rank-1 patch per block (:func:`stack_patches`)."""

    def __init__(self, blocks: list[ContextualBlock]):
        super().__init__()
        if not blocks:
            raise ValueError("a stack needs at least one block")
        d = blocks[0].layer.d_in
        for k, b in enumerate(blocks):
            if b.layer.d_in != d or b.d_model != d:
                raise ValueError(f"block {k} maps {b.layer.d_in} -> {b.d_model}; a stack needs {d} -> {d}")
        self.blocks = nn.ModuleList(blocks)

    def streams(self, seq: torch.Tensor) -> list[torch.Tensor]:
        """The sequence each block reads: ``[seq, out_1, ..., out_{L-1}]``, each ``(B, T, n)``."""
        out = [seq]
        for block in self.blocks[:-1]:
            out.append(block.all_positions(out[-1]))
        return out

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.blocks[-1](self.streams(seq)[-1])


def make_stack(
    kind: str, cfg: Config, depth: int, variant: Variant = "plain", *, seed: int, dtype=torch.float64
) -> BlockStack:
    """A stack of ``depth`` blocks, block ``l`` initialised from the library stream "stack-blocks"
    of ``seed`` (its draw ``l``)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    seeds = runtime.library_streams(seed).seeds("stack-blocks", depth)
    return BlockStack([make_block(kind, cfg, variant, seed=s, dtype=dtype) for s in seeds])
