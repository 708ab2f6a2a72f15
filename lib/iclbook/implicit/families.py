"""Hugging Face model families seen through the probes' names, in half precision if asked, with
the shared demonstrations cached.

:mod:`.probe` reads an attention layer through four ``nn.Linear`` children, ``q_proj``,
``k_proj``, ``v_proj`` and ``out_proj``, and finetunes the parameters whose names contain
``k_proj`` or ``v_proj``. OPT and XGLM (the Hugging Face class of the paper's fairseq models) have
them; GPT-2 and GPT-NeoX/Pythia fuse the three input projections into one. :func:`adapt` gives
every supported family (:data:`FAMILIES`) the four children, computing the same function:

* **GPT-2**: ``c_attn`` is a ``Conv1D`` whose output is ``[q | k | v]`` (``d`` columns each); its
  weight is cut into three ``nn.Linear`` (the transposed slices) and ``c_attn`` becomes a view that
  concatenates their outputs, so finetuning ``k_proj`` and ``v_proj`` changes exactly the K and V
  columns of the fused projection and nothing else. ``c_proj`` becomes an ``nn.Linear``, also
  named ``out_proj``.
* **GPT-NeoX / Pythia**: ``query_key_value`` is *interleaved per head*: its output, viewed as
  ``(heads, 3 * d_head)``, holds ``[q_h | k_h | v_h]`` for each head ``h``. The rows of its weight
  are cut the same way (``weight.view(heads, 3, d_head, d)``), and the fused view re-interleaves
  the three outputs. NeoX rotates queries and keys (rotary positions, on the first
  ``rotary_ndims`` of each head): here ``q_proj`` and ``k_proj`` apply the rotation themselves
  (the layer's own rotation is handed the identity), so that what the probes record, and the
  pre-softmax scores they compute from it, are those the attention actually uses. ``dense`` is
  also named ``out_proj``.
* **OPT, XGLM**: the projections are already separate; they are only swapped for the
  :class:`ProbeLinear` below (same weights) so that half precision works the same way.

**Half precision** (``adapt(model, dtype=torch.float16)``): the whole model runs in half
precision, but the finetuned K/V weights and biases are kept as float32 *master* copies, cast to
half precision on the fly in the forward pass; their gradients come back in float32 and SGD
updates the float32 copies, so an update far below half precision's resolution of the weight
(``lr * grad`` against ``2^-11 * |w|`` in fp16, ``2^-8 * |w|`` in bf16) is not lost. For float16
the loss is also scaled, as fairseq's fp16 optimiser did (:class:`LossScaler`: the gradient is
multiplied by the scale on its way into the half-precision network and divided by it in float32
at the master weights; a step whose gradient overflowed is skipped and the scale halved).
bfloat16 has float32's exponent range and needs no scaling.

**The shared demonstrations** run once: :meth:`Adapted.remember` keeps the keys and values of a
prefix (the ``past_key_values`` of the model), and ``model(ids, past=prefix)`` continues it for a
batch of queries: :func:`.probe.label_logprobs` uses it wherever the prompts share at least
:data:`.probe.MIN_SHARED` tokens.

:func:`tiny` builds a randomly initialised model of each family over the chapter's word
vocabulary, offline, for the tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from iclbook import runtime
from iclbook.implicit.data import BOS, PAD, SEP, TOKEN_ID, VOCAB

#: The model types (``config.model_type``) that :func:`adapt` knows, with a model a Colab reader
#: might try first for each.
FAMILIES = {
    "gpt2": "gpt2, distilgpt2, gpt2-medium",
    "opt": "facebook/opt-125m, facebook/opt-350m, facebook/opt-1.3b",
    "xglm": "facebook/xglm-564M, KoboldAI/fairseq-dense-125M ... -2.7B (the paper's models)",
    "gpt_neox": "EleutherAI/pythia-70m ... pythia-410m",
}


def family_of(model: nn.Module) -> str:
    """``model``'s family (its ``config.model_type``), or a ValueError naming the supported ones."""
    return check_type(getattr(getattr(model, "config", None), "model_type", None))


def check_type(kind: str | None) -> str:
    """``kind`` if it is a supported ``model_type``, else a ValueError naming the supported ones."""
    if kind not in FAMILIES:
        known = "; ".join(f"{k} ({v})" for k, v in FAMILIES.items())
        raise ValueError(f"model type {kind!r} is not supported by the chapter's probes; supported: {known}")
    return kind


# ---------------------------------------------------------------------------------------------
# Half precision: float32 master weights and loss scaling
# ---------------------------------------------------------------------------------------------


class LossScaler:
    """fairseq's dynamic loss scaler (``fairseq.optim.dynamic_loss_scaler``): the loss gradient
    is multiplied by ``scale`` before it enters the half-precision network; at the float32
    master weights it is divided by ``scale`` again. If any of them is then not finite, the step
    is skipped (the gradients are zeroed, so that plain SGD leaves the weights as they are) and the
    scale halved; after ``window`` steps without an overflow it is doubled. Below ``min_scale``
    it gives up (FloatingPointError), as fairseq does.

    ``init_scale`` 4 is the paper's (its ``run.sh`` passed ``--fp16-init-scale 4``); ``window``
    is fairseq's default for one GPU (2^14 steps, so a finetuning of 32 steps never grows it)."""

    def __init__(self, init_scale: float = 4.0, window: int = 2**14, min_scale: float = 1e-4):
        if init_scale <= 0 or min_scale <= 0 or window < 1:
            raise ValueError(f"bad loss scaler settings: init {init_scale}, window {window}, min {min_scale}")
        self.scale, self.window, self.min_scale = float(init_scale), window, min_scale
        self.overflow = False
        self.pending = False
        self.steps = self.skipped = self.good = 0
        self.masters: list[nn.Parameter] = []

    def queue(self) -> None:
        """Called from the backward pass: run :meth:`finish` once it is over."""
        if not self.pending:
            self.pending = True
            torch.autograd.Variable._execution_engine.queue_callback(self.finish)

    def finish(self) -> None:
        self.pending = False
        self.steps += 1
        if self.overflow:
            for p in self.masters:
                if p.grad is not None:
                    p.grad.zero_()
            self.overflow = False
            self.skipped += 1
            self.good = 0
            self.scale /= 2
            if self.scale < self.min_scale:
                raise FloatingPointError(
                    f"loss scale fell below {self.min_scale}: the fp16 gradients overflow at every scale "
                    "(try bfloat16 or float32)"
                )
        else:
            self.good += 1
            if self.good % self.window == 0:
                self.scale *= 2


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by the scaler's scale."""

    @staticmethod
    def forward(ctx, x, scaler):
        ctx.scaler = scaler
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.scaler.queue()
        return grad * ctx.scaler.scale, None


class _MasterCast(torch.autograd.Function):
    """A float32 master weight cast to the network's half precision; its gradient comes back
    in float32, divided by the loss scale, and an overflow is reported to the scaler."""

    @staticmethod
    def forward(ctx, w, dtype, scaler):
        ctx.scaler = scaler
        return w.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.float()
        s = ctx.scaler
        if s is not None:
            grad = grad / s.scale
            if not bool(torch.isfinite(grad).all()):
                s.overflow = True
        return grad, None, None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-b, a), dim=-1)


class ProbeLinear(nn.Linear):
    """An ``nn.Linear`` whose weights may be float32 masters of a half-precision network (cast
    on the fly, gradients in float32 through the model's :class:`LossScaler`), and which may
    apply a rotary position rotation to its output (GPT-NeoX queries and keys: ``heads`` heads,
    ``rope = (cos, sin)`` set by the attention layer just before it runs)."""

    scaler: LossScaler | None = None
    heads: int = 0
    rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def like(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> ProbeLinear:
        """A ProbeLinear holding copies of ``weight (out, in)`` and ``bias``."""
        lin = cls(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        lin.weight = nn.Parameter(weight.detach().clone())
        lin.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == x.dtype:
            y = F.linear(x, self.weight, self.bias)
        else:
            w = _MasterCast.apply(self.weight, x.dtype, self.scaler)
            b = None if self.bias is None else _MasterCast.apply(self.bias, x.dtype, self.scaler)
            y = F.linear(x, w, b)
        if self.rope is None:
            return y
        cos, sin = self.rope  # (b, n, rotary dims)
        *lead, d = y.shape
        y = y.view(*lead, self.heads, d // self.heads)
        r = cos.shape[-1]
        cos, sin = cos.unsqueeze(-2).to(y.dtype), sin.unsqueeze(-2).to(y.dtype)
        turned = y[..., :r] * cos + _rotate_half(y[..., :r]) * sin
        return torch.cat([turned, y[..., r:]], -1).reshape(*lead, d)


class Fused(nn.Module):
    """What a fused projection computed, from the three separate ones (held, not registered:
    they are the attention layer's ``q_proj``, ``k_proj``, ``v_proj``): ``[q | k | v]`` for GPT-2,
    ``[q_h | k_h | v_h]`` per head for GPT-NeoX (``heads`` > 0)."""

    def __init__(self, parts: tuple[nn.Module, nn.Module, nn.Module], heads: int = 0):
        super().__init__()
        self.parts = list(parts)  # a plain list: not submodules, so no second parameter name
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (p(x) for p in self.parts)
        if not self.heads:
            return torch.cat([q, k, v], -1)
        *lead, d = q.shape
        split = [t.view(*lead, self.heads, d // self.heads) for t in (q, k, v)]
        return torch.cat(split, -1).reshape(*lead, 3 * d)


def _rotary_to_projections(module: nn.Module, args, kwargs):
    """Forward pre-hook of a GPT-NeoX attention layer: hand the rotation to ``q_proj`` and
    ``k_proj`` and the identity rotation to the layer itself (``q * 1 + rot(q) * 0 = q``)."""
    cos, sin = kwargs["position_embeddings"]
    module.q_proj.rope = module.k_proj.rope = (cos, sin)
    kwargs["position_embeddings"] = (torch.ones_like(cos), torch.zeros_like(sin))
    return args, kwargs


def _forget_rotary(module: nn.Module, args, output):
    module.q_proj.rope = module.k_proj.rope = None


def _split_gpt2(attn: nn.Module) -> None:
    if getattr(attn, "is_cross_attention", False) or getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("GPT-2 with cross-attention or scale_attn_by_inverse_layer_idx is not supported")
    if not getattr(attn, "scale_attn_weights", True):
        raise ValueError("GPT-2 without scale_attn_weights is not supported (the probes divide by sqrt(d_head))")
    d = attn.embed_dim
    w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: y = x @ w + b, w (d, 3d)
    q, k, v = (ProbeLinear.like(w[:, i * d : (i + 1) * d].T, b[i * d : (i + 1) * d]) for i in range(3))
    out = ProbeLinear.like(attn.c_proj.weight.T, attn.c_proj.bias)
    attn.c_attn = Fused((q, k, v))
    attn.q_proj, attn.k_proj, attn.v_proj = q, k, v
    attn.c_proj = out
    attn.out_proj = out


def _split_neox(attn: nn.Module, heads: int) -> None:
    fused = attn.query_key_value
    d = fused.in_features
    dh = d // heads
    w = fused.weight.view(heads, 3, dh, d)
    b = None if fused.bias is None else fused.bias.view(heads, 3, dh)
    q, k, v = (ProbeLinear.like(w[:, i].reshape(d, d), None if b is None else b[:, i].reshape(d)) for i in range(3))
    q.heads = k.heads = heads
    attn.query_key_value = Fused((q, k, v), heads=heads)
    attn.q_proj, attn.k_proj, attn.v_proj = q, k, v
    attn.out_proj = attn.dense
    attn.register_forward_pre_hook(_rotary_to_projections, with_kwargs=True)
    attn.register_forward_hook(_forget_rotary)


def _separate(attn: nn.Module) -> None:
    for name in ("q_proj", "k_proj", "v_proj"):
        lin = getattr(attn, name)
        setattr(attn, name, ProbeLinear.like(lin.weight, lin.bias))


def _attention_layers(model: nn.Module, family: str) -> list[nn.Module]:
    kinds = {"gpt2": "GPT2Attention", "opt": "OPTAttention", "xglm": "XGLMAttention", "gpt_neox": "GPTNeoXAttention"}
    found = [m for m in model.modules() if type(m).__name__ == kinds[family]]
    if not found:
        raise ValueError(f"no {kinds[family]} module in this {family} model")
    return found


# ---------------------------------------------------------------------------------------------
# The adapted model
# ---------------------------------------------------------------------------------------------


#: Where a progress bar listens (``METER[0](tokens)``, :class:`.real.Meter` sets it): every
#: forward pass of an adapted model reports its tokens (three times that with a gradient: the
#: backward pass costs about two forwards). A module-level slot, so that a model's deep copies
#: (each finetuning makes one) report to the same bar without copying it.
METER: list = [None]

#: Most bytes that the expanded keys and values of a cached prefix may take in one forward pass
#: (every row of a batch holds its own copy once the queries' keys are appended): a batch of
#: queries after a long prefix runs in chunks that fit.
KV_BUDGET = 2**30


def _report(tokens: int) -> None:
    if METER[0] is not None:
        METER[0](tokens * (3 if torch.is_grad_enabled() else 1))


@dataclass(frozen=True)
class Prefix:
    """The keys and values of a prompt prefix run once (batch 1), per layer."""

    length: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class Adapted(nn.Module):
    """A Hugging Face causal LM with the probes' projection names (:func:`adapt`).
    ``model(ids)`` gives the logits ``(batch, tokens, vocab)``; ``model(ids, past=prefix)`` the
    logits of ``ids`` following a :meth:`remember`-ed prefix."""

    def __init__(self, model: nn.Module, family: str, scaler: LossScaler | None):
        super().__init__()
        self.hf = model
        self.config = model.config
        self.family = family
        self.scaler = scaler

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for n, p in self.named_parameters() if "k_proj" not in n and "v_proj" not in n)

    def forward(self, ids: torch.Tensor, past: Prefix | None = None) -> torch.Tensor:
        _report(ids.numel())
        if past is None:
            logits = self.hf(input_ids=ids, use_cache=False).logits
        else:
            from transformers import DynamicCache

            k0 = past.layers[0][0]
            row_bytes = 2 * len(past.layers) * k0[0].numel() * k0.element_size() * (1 + ids.shape[1] / past.length)
            step = max(1, int(KV_BUDGET // row_bytes))
            parts = []
            for s in range(0, ids.shape[0], step):
                chunk = ids[s : s + step]
                b = chunk.shape[0]
                cache = DynamicCache(
                    ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in past.layers]
                )
                parts.append(self.hf(input_ids=chunk, past_key_values=cache, use_cache=True).logits)
            logits = torch.cat(parts)
        if self.scaler is not None and torch.is_grad_enabled() and logits.requires_grad:
            logits = _ScaleGrad.apply(logits, self.scaler)
        return logits

    @torch.no_grad()
    def remember(self, prefix: torch.Tensor) -> Prefix:
        """Run ``prefix (1, p)`` once and keep its keys and values."""
        if prefix.ndim != 2 or prefix.shape[0] != 1:
            raise ValueError(f"remember() takes one prefix of shape (1, p), got {tuple(prefix.shape)}")
        _report(prefix.numel())
        cache = self.hf(input_ids=prefix, use_cache=True).past_key_values
        layers = tuple((layer.keys, layer.values) for layer in cache.layers)
        return Prefix(prefix.shape[1], layers)

    @torch.no_grad()
    def attentions(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The model's own attention probabilities ``(batch, heads, n, n)`` per layer (what the
        probes' scores are checked against)."""
        return list(self.hf(input_ids=ids, use_cache=False, output_attentions=True).attentions)


def adapt(model: nn.Module, dtype: torch.dtype | None = None, *, init_scale: float = 4.0) -> Adapted:
    """``model`` (a Hugging Face causal LM of a family in :data:`FAMILIES`, loaded with eager
    attention) with separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` in every attention
    layer, in ``dtype`` (default: its own) with float32 master K/V weights where ``dtype`` is a
    half precision, and a :class:`LossScaler` (initial scale ``init_scale``) for float16. The
    model is changed in place (its fused projections replaced) and returned wrapped; pass a copy
    to keep the original."""
    if isinstance(model, Adapted):
        raise ValueError("this model is already adapted")
    family = family_of(model)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise ValueError(
            f"load the model with attn_implementation='eager' (it has {impl!r}): the probes read "
            "attention probabilities that fused kernels do not return"
        )
    heads = int(model.config.num_attention_heads)
    attns = _attention_layers(model, family)
    for attn in attns:
        if family == "gpt2":
            _split_gpt2(attn)
        elif family == "gpt_neox":
            _split_neox(attn, heads)
        else:
            _separate(attn)
    dtype = dtype or next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    masters = [p for a in attns for lin in (a.k_proj, a.v_proj) for p in lin.parameters()]
    keep = [p.detach().float().clone() for p in masters]
    model.to(dtype)
    for p, w in zip(masters, keep):
        p.data = w  # the finetuned weights stay float32 (masters of the half-precision network)
    scaler = LossScaler(init_scale) if dtype == torch.float16 else None
    if scaler is not None:
        scaler.masters = masters
        for a in attns:
            a.k_proj.scaler = a.v_proj.scaler = scaler
    return Adapted(model.eval(), family, scaler)


# ---------------------------------------------------------------------------------------------
# Tiny random models of each family, offline
# ---------------------------------------------------------------------------------------------


def tiny_config(family: str, layers: int = 2, d_model: int = 64, heads: int = 4, positions: int = 256):
    """The ``transformers`` config of a tiny model of ``family`` over the chapter's vocabulary
    (eager attention, no dropout)."""
    from iclbook.implicit.hf import _quiet_import

    _quiet_import()
    import transformers as tf

    ids = dict(pad_token_id=TOKEN_ID[PAD], bos_token_id=TOKEN_ID[BOS], eos_token_id=TOKEN_ID[SEP])
    v = len(VOCAB)
    if family == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=v, n_embd=d_model, n_layer=layers, n_head=heads, n_positions=positions,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )  # fmt: skip
    elif family == "opt":
        cfg = tf.OPTConfig(
            vocab_size=v, hidden_size=d_model, num_hidden_layers=layers, ffn_dim=4 * d_model,
            num_attention_heads=heads, max_position_embeddings=positions, word_embed_proj_dim=d_model,
            do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0, **ids,
        )  # fmt: skip
    elif family == "xglm":
        cfg = tf.XGLMConfig(
            vocab_size=v, d_model=d_model, num_layers=layers, attention_heads=heads, ffn_dim=4 * d_model,
            max_position_embeddings=positions, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            layerdrop=0.0, **ids,
        )  # fmt: skip
    elif family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            vocab_size=v, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * d_model, max_position_embeddings=positions, hidden_dropout=0.0,
            attention_dropout=0.0, rotary_pct=0.25, tie_word_embeddings=False, **ids,
        )  # fmt: skip
    else:
        check_type(family)  # raises, naming the families
    cfg._attn_implementation = "eager"
    return cfg


def tiny(family: str, seed: int = 0, **sizes) -> nn.Module:
    """A randomly initialised Hugging Face causal LM of ``family`` (:func:`tiny_config`), built
    offline, not adapted (``adapt(tiny(...))`` for the probes)."""
    from transformers import AutoModelForCausalLM

    with runtime.seeded(seed):  # without touching the caller's stream
        return AutoModelForCausalLM.from_config(tiny_config(family, **sizes), attn_implementation="eager").eval()


def adapted_copy(model: nn.Module, dtype: torch.dtype | None = None, **kw) -> Adapted:
    """:func:`adapt` on a deep copy of ``model`` (the original unchanged)."""
    return adapt(copy.deepcopy(model), dtype, **kw)
