"""Reading a language model the way the paper did: prompts scored by label log-probabilities,
forward hooks that record each attention layer, and finetuning of the key and value projections.

The hooks attach to modules by *name* (``q_proj``, ``k_proj``, ``out_proj`` inside an attention
module), so the same code reads :class:`~iclbook.implicit.model.TinyLM` and a Hugging Face model
with separate projections (OPT, XGLM). Token ids come from a :mod:`.codec` (the chapter's word
vocabulary by default, a Hugging Face tokenizer for real text); token ids go to the model's device
and everything recorded comes back to the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from iclbook.implicit.codec import WORDS, Codec
from iclbook.implicit.data import NONCE_LABELS, Dataset, Task

# ---------------------------------------------------------------------------------------------
# Prompts and scoring
# ---------------------------------------------------------------------------------------------


def pad_right(seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, max_len)`` right-padded ids and ``(n,)`` index of each row's last real token.
    Right padding never changes a causal model's outputs at the real positions."""
    if not seqs:
        raise ValueError("no sequences to pad")
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, torch.tensor([len(s) - 1 for s in seqs])


#: Most logits one forward pass may hold (512 MB in float32): a real model's long prompts times
#: its 50K-word vocabulary would otherwise fill the GPU at the tiny model's batch sizes.
LOGIT_BUDGET = 2**27


def vocab_size(model: nn.Module) -> int:
    """The output vocabulary of a TinyLM (``cfg.vocab``) or a Hugging Face model
    (``config.vocab_size``); 50,000 if neither says."""
    for cfg, attr in ((getattr(model, "config", None), "vocab_size"), (getattr(model, "cfg", None), "vocab")):
        if isinstance(getattr(cfg, attr, None), int):
            return getattr(cfg, attr)
    return 50_000


def rows_per_batch(model: nn.Module, prompts: Sequence[Sequence[int]], cap: int) -> int:
    """How many of ``prompts`` one forward pass takes: ``cap``, or fewer so that the logits stay
    within :data:`LOGIT_BUDGET`."""
    longest = max((len(p) for p in prompts), default=1)
    return max(1, min(cap, LOGIT_BUDGET // (longest * vocab_size(model))))


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix that every prompt shares, leaving each at least its last
    token (the position that predicts the label)."""
    if not prompts:
        return 0
    lo, hi = min(prompts), max(prompts)  # the lexicographic extremes bound the prefix
    n = 0
    for a, b in zip(lo, hi):
        if a != b:
            break
        n += 1
    return max(0, min(n, min(len(p) for p in prompts) - 1))


#: Shortest shared prefix worth running once (the demonstrations; a zero-shot prompt shares
#: only BOS and its template words).
MIN_SHARED = 16


@torch.no_grad()
def label_logprobs(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[int],
    batch: int = 256,
    pad: int = WORDS.pad_id,
) -> torch.Tensor:
    """``(n, C)`` log-probabilities (on the CPU) of each candidate label token after each prompt.

    Where the prompts share a prefix of at least :data:`MIN_SHARED` tokens (the same
    demonstrations before every query) and the model can cache one (our :class:`TinyLM`'s
    ``remember``), the prefix runs once and each query only continues it: the same numbers to
    float rounding, at the cost of the queries alone."""
    out = []
    cand = torch.as_tensor(list(candidates))
    prompts = [list(p) for p in prompts]
    past, start = None, shared_prefix(prompts) if hasattr(model, "remember") else 0
    if start >= MIN_SHARED:
        past = model.remember(torch.tensor([prompts[0][:start]], device=device_of(model)))
        prompts = [p[start:] for p in prompts]
    batch = rows_per_batch(model, prompts, batch)
    for i in range(0, len(prompts), batch):
        ids, last = pad_right(prompts[i : i + batch], pad)
        logits = logits_of(model, ids, past)[torch.arange(len(last)), last].float().cpu()
        out.append(F.log_softmax(logits, dim=-1)[:, cand])
    return torch.cat(out)


def demonstrations(
    pool: Dataset, k: int, gen: torch.Generator, labels: Sequence[str] | None = None
) -> list[tuple[list[str], str]]:
    """``k`` demonstrations drawn without replacement from ``pool``, labelled with ``labels``
    (default: the task's canonical words)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > len(pool):
        raise ValueError(f"k={k} demonstrations asked from a pool of {len(pool)}")
    labels = tuple(labels) if labels is not None else pool.task.labels
    if len(labels) != pool.task.n_classes:
        raise ValueError(f"{pool.task.name} needs {pool.task.n_classes} label words, got {len(labels)}")
    idx = torch.randperm(len(pool), generator=gen)[:k].tolist()
    return [(pool.inputs[i], labels[int(pool.classes[i])]) for i in idx]


def nonce_labels(task: Task, gen: torch.Generator, pool: Sequence[str] = NONCE_LABELS) -> tuple[str, ...]:
    """A random verbalizer of nonce words (``"dax"``, ``"wug"``...) for ``task``, drawn from
    ``pool`` (a codec's ``nonce_pool``)."""
    if len(pool) < task.n_classes:
        raise ValueError(f"{task.name} needs {task.n_classes} nonce words, the pool has {len(pool)}")
    idx = torch.randperm(len(pool), generator=gen)[: task.n_classes].tolist()
    return tuple(pool[i] for i in idx)


def build_prompts(
    data: Dataset, demos: Sequence[tuple[object, str]], max_len: int, codec: Codec = WORDS
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """ICL prompts (``demos`` then each input of ``data``) and their demonstration spans."""
    out = [codec.prompt(data.task, demos, x, max_len=max_len) for x in data.inputs]
    return [p for p, _ in out], [s for _, s in out]


def predict(
    model: nn.Module,
    data: Dataset,
    demos: Sequence[tuple[object, str]] = (),
    labels: Sequence[str] | None = None,
    max_len: int = 256,
    codec: Codec = WORDS,
) -> torch.Tensor:
    """``(n,)`` predicted classes of ``data`` with ``demos`` in context (none: zero-shot)."""
    labels = tuple(labels) if labels is not None else data.task.labels
    prompts, _ = build_prompts(data, demos, max_len, codec)
    return label_logprobs(model, prompts, codec.label_ids(labels), pad=codec.pad_id).argmax(-1)


def accuracy(pred: torch.Tensor, data: Dataset) -> float:
    return float((pred == data.classes).float().mean())


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def logits_of(model: nn.Module, ids: torch.Tensor, past=None) -> torch.Tensor:
    """Logits of our :class:`TinyLM` (a tensor) or of a Hugging Face model (``.logits``), with
    ``ids`` moved to the model's device (``past``: a TinyLM prefix cache the ids continue)."""
    ids = ids.to(device_of(model))
    out = model(ids) if past is None else model(ids, past=past)
    return out.logits if hasattr(out, "logits") else out


# ---------------------------------------------------------------------------------------------
# Recording hooks
# ---------------------------------------------------------------------------------------------


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules of ``model`` in depth order: every module that owns children named
    ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` (our TinyLM, OPT, XGLM...)."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if all(isinstance(getattr(m, p, None), nn.Linear) for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    ]
    if not found:
        raise ValueError("no attention module with q_proj/k_proj/v_proj/out_proj children found")
    return found


def head_count(model: nn.Module, module: nn.Module) -> int:
    for attr in ("heads", "num_heads"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_attention_heads"):
        return int(config.num_attention_heads)
    raise ValueError("cannot tell the number of attention heads of this model")


class Recorder:
    """Forward hooks that keep, for every attention layer, the outputs of ``q_proj``, ``k_proj``
    and ``out_proj`` and the attention's input ``x`` (what the projections read, after the
    LayerNorm and any token mixing) of the last forward pass (shapes ``(batch, tokens, d)``)::

        with Recorder(model) as rec:
            logits_of(model, ids)
        rec.q[0], rec.k[0], rec.out[0]      # layer 0
    """

    def __init__(self, model: nn.Module):
        self.modules = attention_modules(model)
        self.heads = [head_count(model, m) for _, m in self.modules]
        self.q: list[torch.Tensor | None] = [None] * len(self.modules)
        self.k: list[torch.Tensor | None] = [None] * len(self.modules)
        self.out: list[torch.Tensor | None] = [None] * len(self.modules)
        self.x: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list = []

    def __enter__(self) -> Recorder:
        for i, (_, m) in enumerate(self.modules):
            for store, proj in ((self.q, m.q_proj), (self.k, m.k_proj), (self.out, m.out_proj)):

                def hook(_mod, _inp, output, store=store, i=i):
                    store[i] = output.detach()

                self._handles.append(proj.register_forward_hook(hook))

            def keep_input(_mod, inp, _out, i=i):
                self.x[i] = inp[0].detach()

            self._handles.append(m.q_proj.register_forward_hook(keep_input))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def scores(self, layer: int, row: int, position: int, *, positional: bool = True) -> torch.Tensor:
        """``(heads, position + 1)`` pre-softmax scores ``q . k / sqrt(d_h)`` from ``position``
        of batch ``row`` to every token up to it, plus (``positional``) the positional score bias
        :meth:`positional_bias`. ``positional=False`` gives the *content* part alone, the part a
        model with position embeddings added to its input (the paper's) has as its whole score."""
        q, k, h = self.q[layer][row], self.k[layer][row], self.heads[layer]
        d = q.shape[-1] // h
        qh = q[position].view(h, d)
        kh = k[: position + 1].view(position + 1, h, d)
        s = torch.einsum("hd,nhd->hn", qh, kh) / d**0.5
        bias = self.positional_bias(layer, position, dtype=s.dtype, device=s.device) if positional else None
        return s if bias is None else s + bias

    def positional_bias(
        self, layer: int, position: int, *, dtype: torch.dtype = torch.float32, device=None
    ) -> torch.Tensor | None:
        """``(heads, position + 1)`` ALiBi bias ``-m_h (position - i)`` of ``layer``'s scores from
        ``position``, where the attention module has one (a tensor attribute ``alibi`` of slopes);
        ``None`` where it has no positional score bias (position embeddings, as the paper's
        models), which is a bias of 0."""
        slopes = getattr(self.modules[layer][1], "alibi", None)
        if not isinstance(slopes, torch.Tensor):
            return None
        gap = position - torch.arange(position + 1, dtype=dtype, device=device)
        return -(slopes.to(dtype=dtype, device=device)[:, None] * gap)


@torch.no_grad()
def record(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    offset: int = 0,
    batch: int = 128,
    pad: int = WORDS.pad_id,
    columns: Sequence[int] | None = None,
    full_rows: int | None = None,
    tail: int | None = None,
) -> dict:
    """Run ``prompts`` and keep, per prompt, at the predicting position (the last prompt token,
    or ``offset`` tokens later if the prompts carry extra tokens, as the paper's code did):

    ``out (n, layers, d)`` attention outputs after ``out_proj``; ``q (n, layers, d)`` queries;
    ``scores`` a list of ``(layers, heads, position + 1)`` pre-softmax score rows; ``content``
    the same rows without the positional score bias (:meth:`Recorder.positional_bias`; the very
    tensors of ``scores`` where the model has none, so a model without one costs no memory and
    takes the same path with a bias of 0); and ``logprobs (n, vocab)`` at that position. All on
    the CPU.

    Memory bounds for a real model (whole rows of 2,048 tokens x 24 layers x 32 heads are 6 MB a
    prompt, and a 50K vocabulary 0.2 MB): ``columns`` keeps only those vocabulary columns of
    ``logprobs`` (``(n, len(columns))``); prompts from index ``full_rows`` on keep only the last
    ``tail`` positions of their score rows (the query prompt's tokens)."""
    if (full_rows is None) != (tail is None):
        raise ValueError("give full_rows and tail together (or neither)")
    cols = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long)
    outs, qs, scores, content, logps = [], [], [], [], []
    prompts = [list(p) for p in prompts]
    # the demonstrations every prompt shares run once (as label_logprobs does), their keys kept
    # for the score rows: the same numbers to float rounding, at the cost of the queries alone
    past, start = None, 0
    if hasattr(model, "remember") and prompts:  # the predicting positions stay after the prefix
        start = min(shared_prefix(prompts), min(len(p) for p in prompts) - 1 - offset)
    if start >= MIN_SHARED:
        with Recorder(model) as pre:
            past = model.remember(torch.tensor([prompts[0][:start]], device=device_of(model)))
        prefix_k = list(pre.k)
        prompts = [p[start:] for p in prompts]
    else:
        start = 0
    batch = rows_per_batch(model, prompts, batch)
    for s in range(0, len(prompts), batch):
        ids, last = pad_right(prompts[s : s + batch], pad)
        last = last - offset
        with Recorder(model) as rec:
            logits = logits_of(model, ids, past)
        if past is not None:  # keys over the whole context, queries at their whole-context positions
            n = len(last)
            rec.k = [torch.cat([pk.expand(n, -1, -1), k], 1) for pk, k in zip(prefix_k, rec.k)]
            rec.q = [torch.cat([q.new_zeros(n, start, q.shape[-1]), q], 1) for q in rec.q]
        rows = torch.arange(len(last))
        dev = logits.device
        outs.append(torch.stack([o[rows.to(dev), last.to(dev)] for o in rec.out], 1).cpu())
        lp = F.log_softmax(logits[rows.to(dev), last.to(dev)].float(), -1)
        logps.append((lp if cols is None else lp[:, cols.to(dev)]).cpu())
        del logits
        last = last + start  # whole-context positions, for the queries and score rows
        qs.append(torch.stack([q[rows.to(dev), last.to(dev)] for q in rec.q], 1).cpu())
        for r, pos in enumerate(last.tolist()):
            bare = torch.stack([rec.scores(l, r, pos, positional=False) for l in range(len(rec.out))])
            biases = [rec.positional_bias(l, pos, dtype=bare.dtype, device=bare.device) for l in range(len(rec.out))]
            biased = any(b is not None for b in biases)
            row = torch.stack([c if b is None else c + b for c, b in zip(bare, biases)]) if biased else bare
            if full_rows is not None and s + r >= full_rows:
                row, bare = row[..., -tail:], bare[..., -tail:]
            scores.append(row.cpu())
            # no positional bias: the content rows are the score rows (the same tensors)
            content.append(bare.cpu() if biased else scores[-1])
    return {
        "out": torch.cat(outs),
        "q": torch.cat(qs),
        "scores": scores,
        "content": content,
        "logprobs": torch.cat(logps),
    }


# ---------------------------------------------------------------------------------------------
# Finetuning the keys and values
# ---------------------------------------------------------------------------------------------

KV_FILTER = ("k_proj", "v_proj")


def kv_parameters(model: nn.Module, filters: Sequence[str] = KV_FILTER) -> list[str]:
    """Names of the parameters the paper finetuned: those whose name contains ``k_proj`` or
    ``v_proj`` (weights *and* biases, every layer)."""
    names = [n for n, _ in model.named_parameters() if any(f in n for f in filters)]
    if not names:
        raise ValueError(f"no parameter name contains any of {tuple(filters)}")
    return names


def sequence_nll(model: nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """Mean next-token NLL over every token of ``ids`` after the first (the causal-LM loss of
    the paper's finetuning: the whole demonstration, not only its label)."""
    t = torch.as_tensor(list(ids), dtype=torch.long, device=device_of(model))[None]
    if t.shape[1] < 2:
        raise ValueError("a finetuning example needs at least two tokens")
    logits = logits_of(model, t)  # the whole example, so every token has a query
    return F.cross_entropy(logits[0, :-1].float(), t[0, 1:])


@dataclass
class FinetuneResult:
    model: nn.Module
    losses: list[float]
    queries: list[list[torch.Tensor]]  # per example, per layer: (tokens, d) queries seen


def finetune_kv(
    model: nn.Module,
    examples: Sequence[Sequence[int]],
    lr: float,
    *,
    mode: str = "sequential",
    filters: Sequence[str] = KV_FILTER,
    keep_queries: bool = False,
) -> FinetuneResult:
    """Finetune a copy of ``model`` on ``examples`` (token ids of ``BOS template(x, y)``) with
    plain SGD on the K/V parameters only.

    ``mode="sequential"`` is the paper's recipe: batch size 1, one pass in the given order.
    ``mode="full"`` is one full-batch gradient step on the summed losses, blind to the order.
    With ``keep_queries`` the queries of every training token in its forward pass are kept (the
    ``q'_j`` of the paper's Kendall statistic)."""
    if not examples:
        raise ValueError("no demonstrations to finetune on")
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if mode not in ("sequential", "full"):
        raise ValueError(f"mode must be 'sequential' or 'full', got {mode!r}")
    tuned = copy.deepcopy(model)
    names = set(kv_parameters(tuned, filters))
    params = []
    for n, p in tuned.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    opt = torch.optim.SGD(params, lr=lr)
    losses, queries = [], []
    batches = [[ex] for ex in examples] if mode == "sequential" else [list(examples)]
    for group in batches:
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device_of(tuned))
        for ex in group:
            if keep_queries:
                with Recorder(tuned) as rec:
                    loss = sequence_nll(tuned, ex)
                queries.append([q[0, 1:].cpu() for q in rec.q])  # drop BOS: tokens of x, y
            else:
                loss = sequence_nll(tuned, ex)
            losses.append(float(loss.detach()))
            total = total + loss
        total.backward()
        opt.step()
    for p in tuned.parameters():
        p.requires_grad_(True)
    tuned.eval()
    return FinetuneResult(tuned, losses, queries)


# ---------------------------------------------------------------------------------------------
# One finetuning per learning rate, all rates in one pass
# ---------------------------------------------------------------------------------------------


class StackedLinear(nn.Module):
    """``copies`` independent copies of one ``nn.Linear``: the batch is ``copies`` equal slices,
    copy-major, and copy ``r`` maps slice ``r`` (one batched matmul for all of them)."""

    def __init__(self, linear: nn.Linear, copies: int):
        super().__init__()
        self.copies = copies
        self.weight = nn.Parameter(linear.weight.detach().expand(copies, -1, -1).clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().expand(copies, -1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.copies:
            raise ValueError(f"a batch of {x.shape[0]} rows is not {self.copies} equal slices")
        flat = x.reshape(self.copies, -1, x.shape[-1])
        out = flat @ self.weight.transpose(1, 2)
        if self.bias is not None:
            out = out + self.bias[:, None, :]
        return out.reshape(*x.shape[:-1], out.shape[-1])


@dataclass
class RateStack:
    """The K/V finetunings of one model at several learning rates, held as one network whose
    K/V projections are :class:`StackedLinear` (copy ``r``: learning rate ``lrs[r]``)."""

    model: nn.Module
    lrs: tuple[float, ...]

    @torch.no_grad()
    def predict(self, data: Dataset, max_len: int = 256, codec: Codec = WORDS, batch: int = 2048) -> torch.Tensor:
        """``(rates, n)`` zero-shot predicted classes of ``data`` by each finetuning (what
        :func:`predict` gives each one alone, to float rounding)."""
        copies = len(self.lrs)
        prompts, _ = build_prompts(data, (), max_len, codec)
        cand = torch.as_tensor(list(codec.label_ids(data.task.labels)))
        rows = max(1, rows_per_batch(self.model, prompts, max(1, batch // copies) * copies) // copies)
        out = []
        for i in range(0, len(prompts), rows):
            ids, last = pad_right(prompts[i : i + rows], codec.pad_id)
            ids = ids.to(device_of(self.model))
            logits = logits_of(self.model, ids.repeat(copies, 1)).view(copies, len(last), ids.shape[1], -1)
            at = logits[:, torch.arange(len(last)), last].float().cpu()  # (copies, rows, vocab)
            out.append(F.log_softmax(at, dim=-1)[..., cand].argmax(-1))
        return torch.cat(out, 1)


def finetune_kv_rates(
    model: nn.Module, examples: Sequence[Sequence[int]], lrs: Sequence[float], filters: Sequence[str] = KV_FILTER
) -> RateStack:
    """:func:`finetune_kv` (the paper's sequential recipe) at every learning rate of ``lrs`` in
    one pass: each step runs all the rates' copies of the example as one batch. The same SGD to
    float rounding; where SGD is unstable (rates of 0.1 and more on our tiny GPT) rounding
    differences grow over the steps, as they would between two machines, so the rates agree
    with :func:`finetune_kv` closely only where it is stable. Our :class:`TinyLM` only (its
    attention calls ``k_proj`` and ``v_proj`` on the whole batch)."""
    if not examples:
        raise ValueError("no demonstrations to finetune on")
    if not lrs or min(lrs) <= 0:
        raise ValueError(f"learning rates must be > 0, got {tuple(lrs)}")
    copies = len(lrs)
    stacked = copy.deepcopy(model)
    for p in stacked.parameters():
        p.requires_grad_(False)
    for _, attn in attention_modules(stacked):
        for name in ("k_proj", "v_proj"):
            if any(f in name for f in filters):
                setattr(attn, name, StackedLinear(getattr(attn, name), copies))
    params = [p for p in stacked.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no K/V projection matches {tuple(filters)}")
    rate = torch.tensor(list(lrs), dtype=params[0].dtype, device=params[0].device)
    for ex in examples:
        t = torch.as_tensor(list(ex), dtype=torch.long, device=device_of(stacked))[None].repeat(copies, 1)
        if t.shape[1] < 2:
            raise ValueError("a finetuning example needs at least two tokens")
        logits = logits_of(stacked, t)
        nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), t[:, 1:].flatten(), reduction="none")
        grads = torch.autograd.grad(nll.view(copies, -1).mean(1).sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(rate.view(-1, *([1] * (p.dim() - 1))) * g)
    stacked.eval()
    return RateStack(stacked, tuple(lrs))
