"""Chapter 1's models: the paper's one-layer transformer, its hinge loss, and a small multi-layer
transformer for the paper's GPT-2 check.

The one-layer model is one softmax-attention head and a ReLU MLP with a fixed read-out ``a``:
``F(P) = a^T relu(W_O sum_i attn_i W_V p_i)``, with attention of the query over the contexts
only; prediction ``sign F``; hinge loss; plain SGD. Both models name their activations as hook
points (:class:`iclbook.internals.HookPoints`): ``model.internals(tokens)`` records them, and
``internals.overriding(model, attention=...)`` replaces one during a pass.

Shapes: ``n`` prompts, ``l`` contexts, ``d = d_X + d_Y`` token size, ``m`` neurons.
"""

from __future__ import annotations

import torch
from torch import nn

from iclbook import runtime
from iclbook.internals import HookPoints
from iclbook.patterns.config import Config


class OneLayerICL(HookPoints, nn.Module):
    """``F(P) = a^T relu(W_O sum_i attn_i W_V p_i)``, ``attn = softmax_i((W_K p_i)^T W_Q p_q)``.

    The query attends to the ``l`` contexts only. ``a`` is fixed at ``+-1/m`` (half each), as in
    the analysis. Every name of :data:`INTERNALS` is a hook point of :meth:`forward`
    (``model.internals(tokens)`` records them all from one pass); :meth:`neuron_rows` gives the
    rows of ``W_O W_V``.
    """

    #: The hook points of :meth:`forward` (:mod:`iclbook.internals`), in the order they are computed.
    INTERNALS = {
        "attention": "(n, l) the query's attention over the contexts",
        "mixed": "(n, d) the attention-weighted sum of the context tokens",
        "hidden": "(n, m) the neurons' pre-activations W_O W_V mixed",
        "active": "(n, m) relu(hidden)",
        "output": "(n,) F = a . active, the prediction's margin",
    }

    def __init__(self, cfg: Config, seed: int):
        super().__init__()
        d, m = cfg.d, cfg.m
        gen = runtime.generator(seed)
        self.W_Q = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_K = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_V = nn.Parameter(cfg.init_attn * torch.eye(d))
        self.W_O = nn.Parameter(cfg.init_out * torch.randn(m, d, generator=gen))
        self.register_buffer("a", torch.cat([torch.ones(m // 2), -torch.ones(m - m // 2)]) / m)

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention of the query over the contexts, ``(n, l)``. The score
        ``(W_K p_i)^T W_Q p_q`` is computed as ``p_i^T (W_K^T W_Q p_q)``: one matrix product per
        prompt instead of one per context (the same function, faster to train)."""
        qk = (tokens[:, -1] @ self.W_Q.T) @ self.W_K  # (n, d): W_K^T W_Q p_q
        return torch.softmax(torch.einsum("nld,nd->nl", tokens[:, :-1], qk), dim=-1)

    def forward(self, tokens: torch.Tensor, neuron_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The chapter's equation for the model (section "The model and its training"):
        ``F(Psi; P) = a^T relu(W_O sum_i W_V p_i attn_i)`` for each prompt of ``tokens``
        ``(n, l + 1, d)``, returned as ``(n,)``. The attention-weighted sum of the tokens comes
        first, then ``W_V`` and ``W_O`` (the same function). ``neuron_mask`` ``(m,)`` zeroes
        pruned neurons."""
        att = self.hook("attention", self.attention(tokens))
        mixed = self.hook("mixed", torch.einsum("nl,nld->nd", att, tokens[:, :-1]))
        hidden = self.hook("hidden", (mixed @ self.W_V.T) @ self.W_O.T)
        active = self.hook("active", torch.relu(hidden))
        a = self.a if neuron_mask is None else self.a * neuron_mask
        return self.hook("output", active @ a)

    def neuron_rows(self) -> torch.Tensor:
        """Rows of ``W_O W_V``, ``(m, d)``: each neuron's read of the attention output."""
        return self.W_O @ self.W_V


#: The trained weights of :class:`OneLayerICL`, in the order :func:`stacked_margins` reads them.
PARAMS = ("W_Q", "W_K", "W_V", "W_O")


def stacked_margins(W: dict[str, torch.Tensor], a: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:meth:`OneLayerICL.forward` of every member of an ensemble at once: ``W`` holds the
    members' ``W_Q, W_K, W_V`` ``(E, d, d)`` and ``W_O`` ``(E, m, d)``, ``a`` ``(m,)`` the fixed
    read-out, ``tokens`` ``(E, n, l + 1, d)`` (each member its prompts) or ``(n, l + 1, d)`` (the
    same prompts for all); returns the margins ``F`` ``(E, n)``. The same operations in the same
    order as the model's forward pass, batched over the members (a test checks it against the
    model, member by member)."""
    ctx = tokens[..., :-1, :]
    qk = (tokens[..., -1, :] @ W["W_Q"].transpose(1, 2)) @ W["W_K"]  # (E, n, d): W_K^T W_Q p_q
    spec = "enld,end->enl" if tokens.dim() == 4 else "nld,end->enl"
    att = torch.softmax(torch.einsum(spec, ctx, qk), dim=-1)
    mixed = torch.einsum("enl,enld->end" if tokens.dim() == 4 else "enl,nld->end", att, ctx)
    hidden = (mixed @ W["W_V"].transpose(1, 2)) @ W["W_O"].transpose(1, 2)
    return torch.relu(hidden) @ a


def hinge_loss(F: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mean(max(0, 1 - z F))``: the hinge loss of margins ``F`` ``(n,)`` for labels ``z = +-1``."""
    return torch.clamp(1 - z * F, min=0).mean()


def hinge(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The paper's loss (the chapter's section "The model and its training"):
    :func:`hinge_loss` of the model's margins over a batch of ``(tokens (n, l + 1, d), z (n,))``."""
    tokens, z = batch
    return hinge_loss(model(tokens), z)


class SmallGPT(HookPoints, nn.Module):
    """A pre-LN causal transformer (``torch.nn.TransformerEncoder``'s layers) on the same stacked
    tokens: a linear read-in, ``layers`` blocks of ``heads`` heads, a scalar read-out at the query.
    No positional encoding: the query is the last token and the contexts are exchangeable.

    :meth:`forward` runs the encoder's layers one by one, as the encoder's own loop does, so that
    the stream after each block is a hook point."""

    #: The hook points of :meth:`forward` (:mod:`iclbook.internals`); ``T = l + 1`` tokens.
    INTERNALS = {
        "embedded": "(n, T, width) the read-in tokens",
        "blocks": "(layers, n, T, width) the residual stream after each block (the last one is read on)",
        "final": "(n, width) the normed stream at the query, what the read-out reads",
        "output": "(n,) F, the prediction's margin",
    }

    def __init__(
        self, cfg: Config, seed: int, layers: int | None = None, heads: int | None = None, width: int | None = None
    ):
        super().__init__()
        layers, heads, width = layers or cfg.gpt_layers, heads or cfg.gpt_heads, width or cfg.gpt_width
        with runtime.seeded(seed):
            self.read_in = nn.Linear(cfg.d, width)
            block = nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=4 * width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
            self.read_out = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``F`` for each prompt of ``tokens`` ``(n, T, d)``, ``(n,)``. An override of ``blocks``
        acts on the stream the read-out reads, its last entry (each block has already read the
        one before it).

        With no hook attached, the last block runs at the query only (:meth:`last_block_at_query`):
        the read-out reads nothing else, and the causal mask lets no earlier token see the
        query, so the output is the same function at about 60% of the cost; recording or
        overriding a hook runs every block on every token."""
        h = self.hook("embedded", self.read_in(tokens))
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=h.device, dtype=h.dtype)
        if self.__dict__.get("_hook_state") is None:
            for layer in self.blocks.layers[:-1]:
                h = layer(h, src_mask=mask, is_causal=True)
            return self.read_out(self.norm(self.last_block_at_query(h))).squeeze(-1)
        states = []
        for layer in self.blocks.layers:  # TransformerEncoder.forward's loop (no final norm, no padding)
            h = layer(h, src_mask=mask, is_causal=True)
            states.append(h)
        h = self.hook("blocks", torch.stack(states))[-1]
        final = self.hook("final", self.norm(h[:, -1]))
        return self.hook("output", self.read_out(final).squeeze(-1))

    def last_block_at_query(self, h: torch.Tensor) -> torch.Tensor:
        """The last block's output at the query, ``(n, width)``, from the stream ``h`` ``(n, T,
        width)`` that enters it: the pre-LN block of ``nn.TransformerEncoderLayer`` (norm, self-
        attention of the query over every token, residual; norm, feed-forward, residual) computed
        for the last position alone."""
        layer = self.blocks.layers[-1]
        x = layer.norm1(h)
        x_q = h[:, -1:] + layer.self_attn(x[:, -1:], x, x, need_weights=False)[0]
        x_q = x_q + layer._ff_block(layer.norm2(x_q))
        return x_q[:, 0]

    @torch.no_grad()
    def layer_attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each block's attention of the query over the contexts, averaged over its heads:
        ``(layers, n, l)`` for ``tokens`` ``(n, l + 1, d)`` (the paper's per-layer attention
        figures read its mass on the same-pattern contexts)."""
        h = self.read_in(tokens)
        T = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=h.device, dtype=h.dtype)
        out = []
        for layer in self.blocks.layers:
            x = layer.norm1(h)
            w = layer.self_attn(x[:, -1:], x, x, need_weights=True, average_attn_weights=True)[1]  # (n, 1, T)
            out.append(w[:, 0, :-1])
            h = layer(h, src_mask=mask, is_causal=True)
        return torch.stack(out)
