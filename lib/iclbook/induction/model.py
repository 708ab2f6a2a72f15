"""Chapter 3's networks: the author's two-layer attention network and the minimal model, both
ending in the same three-layer ReLU classifier, and the training loss.

The network: two causal single-head attention layers (no output projection, no ``1/sqrt(d)``,
no LayerNorm, residual updates), then three ReLU layers with one scalar bias each and a linear
read-out to ``L`` logits, applied at the query token. Shapes: ``n`` sequences, ``T = 2N + 1``
tokens, ``d = 2 Nmax + 1 + D``.

Every name of a model's ``INTERNALS`` is a hook point of its forward pass
(:class:`iclbook.internals.HookPoints`): ``model.internals(tokens)`` records them all from one
pass, and ``internals.overriding(model, att2=...)`` replaces one during a pass, in training too.
With nothing attached a hook returns its input: the forward pass computes the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from iclbook.induction.config import Config
from iclbook.internals import HookPoints


class ReluClassifier(nn.Module):
    """Three ReLU layers ``h <- relu(W h + b)`` with one *scalar* bias each, then a linear
    read-out to ``L`` logits without bias; the author's initialisation."""

    def __init__(self, width: int, L: int, generator: torch.Generator):
        super().__init__()

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.w1, self.w2, self.w3 = (normal(width, width, std=math.sqrt(2.0 / width)) for _ in range(3))
        self.b1, self.b2, self.b3 = (normal(1, std=math.sqrt(1.0 / width)) for _ in range(3))
        self.readout = normal(L, width, std=math.sqrt(1.0 / width))

    def hidden(
        self,
        z: torch.Tensor,
        *,
        w1: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """The three ReLU layers' activations ``(..., width)`` for inputs ``z`` ``(..., d)``.

        ``w1`` replaces the first weight matrix: ``(width, d)``, or one matrix per input
        ``(..., width, d)`` (a patched weight, as in chapter 5). ``mask1`` ``(width,)`` multiplies
        the first layer's activations (1 keeps a neuron, 0 prunes it). ``hook(name, x)``, the
        owning network's :meth:`~iclbook.internals.HookPoints.hook`, sees each layer's output as
        ``relu1``, ``relu2``, ``relu3`` (after ``mask1``: what the next layer reads)."""
        w1 = self.w1 if w1 is None else w1
        if w1.dim() == 2:
            z = torch.relu(z @ w1.T + self.b1)
        else:
            z = torch.relu(torch.einsum("...hm,...m->...h", w1, z) + self.b1)
        if mask1 is not None:
            z = z * mask1
        if hook is not None:
            z = hook("relu1", z)
        out = [z]
        for i, (w, b) in enumerate(((self.w2, self.b2), (self.w3, self.b3)), 2):
            z = torch.relu(z @ w.T + b)
            if hook is not None:
                z = hook(f"relu{i}", z)
            out.append(z)
        return out

    def forward(
        self,
        z: torch.Tensor,
        *,
        w1: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(..., L)`` logits of inputs ``z`` ``(..., d)`` (``w1``, ``mask1``, ``hook``: :meth:`hidden`)."""
        return self.hidden(z, w1=w1, mask1=mask1, hook=hook)[-1] @ self.readout.T


class InductionNet(HookPoints, nn.Module):
    """Two causal single-head attention layers and a three-layer ReLU classifier (author's code).

    ``forward`` returns the ``L`` logits at the query. It uses exact algebraic shortcuts: layer 1
    reassociates ``(u Q^T)(u K^T)^T = u (Q^T K) u^T`` and ``a (u V^T) = (a u) V^T``; layer 2 and
    the classifier run at the query token only, which is all the read-out sees. ``direct``
    computes every product as written in the author's code, at every token; a test checks that
    the two agree to float precision. ``attention`` returns both layers' maps for analysis.
    """

    #: The hook points of ``forward`` (:mod:`iclbook.internals`); ``T`` tokens, the query last.
    INTERNALS = {
        "att1": "(n, T, T) layer 1's attention map (row: the attending token)",
        "resid1": "(n, T, d) the residual stream after layer 1",
        "att2": "(n, T) layer 2's attention row at the query",
        "query_state": "(n, d) the residual stream at the query after layer 2: the classifier's input",
        "relu1": "(n, width) the classifier's first ReLU layer",
        "relu2": "(n, width) its second",
        "relu3": "(n, width) its third",
        "logits": "(n, L) the output at the query",
    }

    def __init__(self, cfg: Config, generator: torch.Generator):
        super().__init__()
        d, s = cfg.d, 1.0 / math.sqrt(cfg.D)

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.q1, self.k1, self.v1 = (normal(d, d, std=s) for _ in range(3))
        self.q2, self.k2, self.v2 = (normal(d, d, std=s) for _ in range(3))
        self.mlp = ReluClassifier(d, cfg.L, generator)

    @staticmethod
    def _causal(T: int, device: torch.device) -> torch.Tensor:
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()

    def layer1(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 1 on the residual stream ``u`` ``(n, T, d)``: the stream after it ``(n, T, d)``
        and its causal attention map ``(n, T, T)`` (row: the attending token; hook point
        ``att1``)."""
        logits = (u @ (self.q1.T @ self.k1)) @ u.transpose(-1, -2)
        logits = logits.masked_fill(~self._causal(u.shape[-2], u.device), float("-inf"))
        att = self.hook("att1", logits.softmax(dim=-1))
        return u + (att @ u) @ self.v1.T, att

    def layer2_query(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 2 at the last token only, on the stream ``h`` ``(n, T, d)`` after layer 1: the
        query's stream after it ``(n, d)`` and its attention row ``(n, T)`` (hook point ``att2``).
        ``h`` may hold fewer tokens (``h[:, -1:]``, the query alone)."""
        q = h[..., -1, :]
        r = (q @ self.q2.T) @ self.k2  # the key-space direction the query looks for
        att = self.hook("att2", (h @ r.unsqueeze(-1)).squeeze(-1).softmax(dim=-1))
        mixed = (att.unsqueeze(-2) @ h).squeeze(-2)
        return q + mixed @ self.v2.T, att

    def query_state(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream at the query after both layers ``(n, d)``: the classifier's input."""
        h = self.hook("resid1", self.layer1(tokens)[0])
        return self.hook("query_state", self.layer2_query(h)[0])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(n, L)`` logits at the query of ``tokens`` ``(n, T, d)``."""
        return self.hook("logits", self.mlp(self.query_state(tokens), hook=self.hook))

    def attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 1's full map ``(n, T, T)`` (row: query token) and layer 2's query row ``(n, T)``."""
        h, att1 = self.layer1(tokens)
        _, att2 = self.layer2_query(h)
        return att1, att2

    def induction_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, N)`` each: layer-1 attention of every label to its item, and the query's layer-2
        attention to every label token (the inputs of :func:`progress_measures`)."""
        att1, att2 = self.attention(tokens)
        return self.induction_attention_from({"att1": att1, "att2": att2})

    @staticmethod
    def induction_attention_from(acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`induction_attention` read from the maps ``att1`` and ``att2`` of a forward pass
        already run (recorded by :func:`iclbook.internals.recording`): no second pass."""
        att1, att2 = acts["att1"], acts["att2"]
        rows = torch.arange(1, att1.shape[-1] - 1, 2, device=att1.device)
        return att1[:, rows, rows - 1], att2[:, rows]

    def direct(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The author's computation, unshortened: logits ``(n, L)`` and both full attention maps
        ``(n, T, T)``. It passes no hook point: an independent recomputation."""
        x, maps = tokens, []
        mask = self._causal(tokens.shape[-2], tokens.device)
        for q, k, v in ((self.q1, self.k1, self.v1), (self.q2, self.k2, self.v2)):
            queries, keys, values = x @ q.T, x @ k.T, x @ v.T
            att = (queries @ keys.transpose(-1, -2)).masked_fill(~mask, float("-inf")).softmax(-1)
            maps.append(att)
            x = x + att @ values
        return self.mlp(x)[..., -1, :], maps  # the author applies the MLP at every token


class MinimalNet(HookPoints, nn.Module):
    """The minimal model: the induction head reduced to three scalars, the classifier kept.

    Reconstructed from the paper's description (the spec, section 5): after layer 1 each label
    token holds ``lambda_j + sigmoid(beta1) x_j`` (``beta1``: the previous-token head); the query
    attends to the ``N`` label tokens with logits ``alpha sigmoid(beta1) x_q . x_j + beta2`` and
    to itself with logit 0; ``z = x_q + sum_j a_j lambda_j`` feeds the same ReLU classifier.
    The scalars start at 0, so at first the query spreads its attention evenly.
    """

    #: The hook points of ``forward`` (:mod:`iclbook.internals`); ``N`` item-label pairs.
    INTERNALS = {
        "prev_token": "() sigmoid(beta1): the previous-token head's strength, one scalar for every label",
        "att2": "(n, N) the query's attention to the N label tokens",
        "query_state": "(n, D) x_q + sum_j a_j lambda_j: the classifier's input",
        "relu1": "(n, D) the classifier's first ReLU layer",
        "relu2": "(n, D) its second",
        "relu3": "(n, D) its third",
        "logits": "(n, L) the output at the query",
    }

    def __init__(self, cfg: Config, generator: torch.Generator):
        super().__init__()
        self.P, self.N = cfg.P, cfg.N
        self.beta1 = nn.Parameter(torch.zeros(()))
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta2 = nn.Parameter(torch.zeros(()))
        self.mlp = ReluClassifier(cfg.D, cfg.L, generator)

    def _parts(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The vectors (position slots dropped) of the items ``(n, N, D)``, of the labels
        ``(n, N, D)`` and of the query ``(n, D)``."""
        v = tokens[..., self.P :]
        return v[..., 0 : 2 * self.N : 2, :], v[..., 1 : 2 * self.N : 2, :], v[..., -1, :]

    def induction_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, N)`` each: the previous-token strength ``sigmoid(beta1)`` at every label (hook
        point ``prev_token``, the scalar), and the query's attention to the label tokens (hook
        point ``att2``)."""
        items, _, query = self._parts(tokens)
        s1 = self.hook("prev_token", torch.sigmoid(self.beta1))
        logits = self.alpha * s1 * (items @ query.unsqueeze(-1)).squeeze(-1) + self.beta2
        logits = torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)
        return s1.expand(logits[..., :-1].shape), self.hook("att2", logits.softmax(-1)[..., :-1])

    @staticmethod
    def induction_attention_from(acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`induction_attention` read from the hook points ``prev_token`` and ``att2`` of a
        forward pass already run (recorded by :func:`iclbook.internals.recording`)."""
        return acts["prev_token"].expand(acts["att2"].shape), acts["att2"]

    def query_state(self, tokens: torch.Tensor) -> torch.Tensor:
        """``z = x_q + sum_j a_j lambda_j`` ``(n, D)``: the classifier's input."""
        _, labels, query = self._parts(tokens)
        _, a = self.induction_attention(tokens)
        return self.hook("query_state", query + (a.unsqueeze(-2) @ labels).squeeze(-2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(n, L)`` logits at the query of ``tokens`` ``(n, T, d)``."""
        return self.hook("logits", self.mlp(self.query_state(tokens), hook=self.hook))


def cross_entropy(
    model: Callable[[torch.Tensor], torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The training loss: cross-entropy of the logits at the query against the target label."""
    tokens, target = batch
    return nn.functional.cross_entropy(model(tokens), target)
