"""A tiny GPT for Dai et al. (2023): pre-LayerNorm blocks, tied input/output embeddings, and
attention projections named ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (so the paper's
finetuning filter, "train the parameters whose name contains k_proj or v_proj", and the recording
hooks of :mod:`.probe` work unchanged on this model and on a Hugging Face model).

Two departures from the fairseq GPTs of the paper (the chapter and
``benchmarks/implicit_ablation.py`` show why):

* **Token mixing** before attention: a causal depthwise convolution of width ``mix`` (3), so every
  position reads its two predecessors, as the shift operators of H3 (Fu et al. 2023) do. Keys,
  queries and values are still linear maps of the attention's input; only that input is mixed.
  Without it (and with sinusoidal positions), label-copying ICL did not form in 20,000 steps
  of CPU pretraining; with it, the shipped model's formed between steps 1,000 and 1,500 (other
  seeds take longer). ``mix=0`` switches it off.
* **ALiBi** (Press et al. 2022): each head adds ``-m_h (t - i)`` to its score from position ``t``
  to position ``i`` (``m_h = 2^(-8h/H)``) instead of adding position embeddings to the input
  (the ablation found it unnecessary; the shipped model was trained with it);
  ``positions="sinusoidal"`` gives the fairseq-style embeddings back.

Momentum attention (the paper's Eq. 15) is a switch: with ``momentum = eta > 0`` each head adds
``sum_{i<t} eta^(t-i) v_i`` (unnormalised, current token excluded) to its softmax output.

Example::

    model = TinyLM(LMConfig())
    logits = model(tokens)                 # (batch, tokens, vocab)
    past = model.remember(prefix)          # (1, p): run the shared demonstrations once
    logits = model(queries, past=past)     # = the query rows of model(prefix + queries)
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.std import tqdm

from iclbook import runtime
from iclbook.implicit import tasks


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the tiny language model."""

    vocab: int = len(tasks.VOCAB)
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    d_ff: int = 256
    max_len: int = 256
    momentum: float = 0.0      # eta of momentum attention; 0 = ordinary attention
    positions: str = "alibi"   # "alibi" (score bias) or "sinusoidal" (added to the input)
    mix: int = 3               # width of the causal token-mixing convolution; 0 = none

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


def score_bias(slopes: torch.Tensor, n: int, dtype: torch.dtype = torch.float32,
               start: int = 0) -> torch.Tensor:
    """``(heads, n, start + n)`` additive causal ALiBi bias: ``-m_h (t - i)`` for ``i <= t``,
    ``-inf`` above the diagonal, for queries at positions ``start .. start + n - 1`` (``start``:
    the length of a cached prefix) over keys ``0 .. start + n - 1``."""
    gap = _gaps(n, start, dtype, slopes.device)
    bias = -slopes.to(dtype)[:, None, None] * gap
    return bias.masked_fill(gap < 0, float("-inf"))


def momentum_matrix(n: int, eta: float, dtype: torch.dtype = torch.float32,
                    start: int = 0) -> torch.Tensor:
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

    def attend(self, x: torch.Tensor, past: tuple[torch.Tensor, ...] | None = None
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The attention's output on ``x (b, n, d)``, positions following a cached prefix
        ``past`` (one layer of a :class:`Past`, or None), and this layer's state after ``x``
        (for :meth:`TinyLM.remember`)."""
        b, n, d = x.shape
        h = self.heads
        start = 0 if past is None else past[1].shape[2]
        raw = x if past is None else torch.cat([past[0].expand(b, -1, -1), x], 1)
        x = self.mixed(raw)[:, raw.shape[1] - n:]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)          # (b, h, n, d_h)

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
        tail = raw[:, raw.shape[1] - min(width - 1, raw.shape[1]):]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), (tail, k, v)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg)
        self.fc1, self.fc2 = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, ...] | None = None
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
        pos = (sinusoidal_positions(cfg.max_len, cfg.d_model) if cfg.positions == "sinusoidal"
               else torch.zeros(cfg.max_len, cfg.d_model))
        self.register_buffer("positions", pos, persistent=False)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
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
        return {"x": torch.stack(rec.x), "q": torch.stack(rec.q), "k": torch.stack(rec.k),
                "out": torch.stack(rec.out), "logits": logits}

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
        x = self.embed(tokens) * self.scale + self.positions[start: start + n]
        states = []
        for i, block in enumerate(self.layers):
            x, state = block(x, None if past is None else past.layers[i])
            states.append(state)
        return x, states


MARKERS = torch.tensor(sorted({tasks.TOKEN_ID[t.marker] for t in tasks.TASKS.values()}))


def label_accuracy_by_context(model: TinyLM, batch: torch.Tensor) -> dict[str, float]:
    """Accuracy of the label tokens of pretraining episodes, by number of examples before them
    (the pretraining log of ``retrain`` and the chapter's held-out check)."""
    with torch.no_grad():
        pred = model(batch[:, :-1]).argmax(-1)
    target = batch[:, 1:]
    is_label = torch.isin(batch[:, :-1], MARKERS)
    seen = torch.cumsum(batch[:, :-1] == tasks.TOKEN_ID[tasks.SEP], 1)
    out = {}
    for lo, hi in ((0, 0), (1, 3), (4, 8), (9, 99)):
        m = is_label & (seen >= lo) & (seen <= hi)
        out[f"acc_{lo}_{hi}"] = round(float((pred[m] == target[m]).float().mean()), 4)
    return out


def lm_loss(model: nn.Module, tokens: torch.Tensor, label_weight: float = 1.0) -> torch.Tensor:
    """Next-token cross-entropy over every non-pad target of ``tokens (batch, n+1)``, a weighted
    mean in which the targets that follow a label marker (the label words) count
    ``label_weight`` times (1 = the plain language-model loss)."""
    logits = model(tokens[:, :-1])
    target = tokens[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                          reduction="none").view_as(target)
    weight = (target != tasks.TOKEN_ID[tasks.PAD]).float()
    if label_weight != 1.0:
        is_label = torch.isin(tokens[:, :-1], MARKERS)
        weight = weight * torch.where(is_label, label_weight, 1.0)
    return (nll * weight).sum() / weight.sum()


def perplexity_by_length(model: nn.Module, tokens: torch.Tensor, lengths) -> dict[int, float]:
    """Perplexity of ``tokens (batch, n+1)`` cut at each of ``lengths`` tokens (the paper's
    Table 6 split, "valid @256/512/1024"), from one forward pass: a causal model's loss on the
    first ``L`` positions is its loss on the sequence cut at ``L`` (equals
    ``exp(lm_loss(model, tokens[:, :L + 1]))``)."""
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    target = tokens[:, 1:]
    if max(lengths) > target.shape[1] or min(lengths) < 1:
        raise ValueError(f"lengths must lie in 1..{target.shape[1]}, got {tuple(lengths)}")
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                          reduction="none").view_as(target)
    weight = (target != tasks.TOKEN_ID[tasks.PAD]).float()
    return {int(L): float(torch.exp((nll[:, :L] * weight[:, :L]).sum() / weight[:, :L].sum())) for L in lengths}


# ---------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining recipe (Adam, linear warm-up then cosine decay, gradient clipping)."""

    steps: int = 6000
    batch: int = 40
    seq_len: int = 160
    lr: float = 1e-3
    warmup: int = 200
    clip: float = 1.0
    p_canonical: float = 0.3
    p_plain: float = 0.2
    label_weight: float = 5.0
    seed: int = 0


def pretrain(model: TinyLM, cfg: PretrainConfig, *, log_every: int = 50,
             evaluate: Any = None, eval_every: int | None = None,
             on_eval: Any = None) -> dict[str, Any]:
    """Pretrain ``model`` in place on :func:`tasks.pretraining_batch` episodes.

    ``evaluate(model) -> dict`` (optional) runs every ``eval_every`` steps; its values join the
    history, and ``on_eval(model, history)`` (optional) is called after it (to save a
    checkpoint). Returns the history: steps, losses, evaluations, seconds, tokens, the configs."""
    if cfg.seq_len > model.cfg.max_len:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's max_len={model.cfg.max_len}")
    gen = runtime.generator(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))

    history: dict[str, Any] = {"step": [], "loss": [], "evals": [],
                               "model": asdict(model.cfg), "pretrain": asdict(cfg)}

    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretrain", file=sys.stderr, mininterval=1.0,
               disable=not runtime.progress_enabled())
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = tasks.pretraining_batch(cfg.batch, cfg.seq_len, gen, cfg.p_canonical, cfg.p_plain)
        loss = lm_loss(model, batch, cfg.label_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if (step + 1) % log_every == 0:
            history["step"].append(step + 1)
            history["loss"].append(float(loss.detach()))
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if evaluate is not None and eval_every and ((step + 1) % eval_every == 0):
            model.eval()
            history["evals"].append({"step": step + 1, **evaluate(model)})
            history["seconds"] = time.perf_counter() - start
            history["tokens"] = (step + 1) * cfg.batch * cfg.seq_len
            history["trained_steps"] = step + 1
            if on_eval is not None:
                on_eval(model, history)
            model.train()
    model.eval()
    history["seconds"] = time.perf_counter() - start
    history["tokens"] = cfg.steps * cfg.batch * cfg.seq_len
    history["trained_steps"] = cfg.steps
    return history


# ---------------------------------------------------------------------------------------------
# The shipped checkpoint
# ---------------------------------------------------------------------------------------------

WEIGHTS = Path(__file__).parent / "weights"


def load_shipped(folder: Path | str = WEIGHTS) -> tuple[TinyLM, dict[str, Any]]:
    """The pretrained model shipped with the library and its training record.

    The ``.pt`` file's SHA-256 must match the one in the record (a mismatch is an error: the
    weights are not the ones the record describes), and it is loaded with ``weights_only=True``.
    Retrain with ``python -m iclbook.implicit.retrain``."""
    folder = Path(folder)
    pt, js = folder / "tinylm.pt", folder / "tinylm.json"
    if not pt.exists() or not js.exists():
        raise FileNotFoundError(f"no checkpoint at {folder}; run python -m iclbook.implicit.retrain")
    record = json.loads(js.read_text())
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        raise RuntimeError(f"{pt} has SHA-256 {digest[:12]}..., its record says {record['sha256'][:12]}...")
    model = TinyLM(LMConfig(**record["model"]))
    model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
    return model.eval(), record
