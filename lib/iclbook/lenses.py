"""Chapter 5: the four papers' lenses turned on one trained network, chapter 3's induction net.

Each function takes an :class:`~iclbook.induction.InductionNet` (any checkpoint of it) and a
batch of :class:`~iclbook.induction.Sequences`, and measures what one paper looks at. The
pieces come from the other chapters' modules, one copy each:

* Dherin et al. (chapter 4): the second attention layer with the classifier is a contextual
  block; :func:`contextual_patch` builds Theorem 2.2's rank-1 patch of the classifier's first
  weight matrix with :func:`iclbook.contextual.patches.rank_one_update` and checks it;
* Dai et al. (chapter 2): :func:`dual_form_update` checks the linearised layer 2's dual form
  (:func:`iclbook.implicit.dual_form.relaxed_icl`) and compares the attention-output update of
  ICL with that of one finetuning step (:func:`iclbook.implicit.metrics.simaou`);
* Li et al. (chapter 1): :func:`same_class_attention`, :func:`pruning_curve`
  (:func:`iclbook.patterns.pruning_mask`) and its null, :func:`random_pruning` (many random
  masks of the same size);
* Reddy (chapter 3): the progress measures of :func:`iclbook.induction.measure`, the time axis.

Names: ``h`` is the residual stream after layer 1 ``(n, T, d)``; ``a_full = A(C, x)`` is layer
2's output at the query with its context, ``a_red = A(x)`` the same layer on the query token
alone (its attention is then 1 on itself), ``a_alone`` the query token alone through both
layers (no context anywhere).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iclbook import induction as ih
from iclbook import internals, patterns, runtime
from iclbook.contextual.patches import rank_one_update
from iclbook.implicit import dual_form, metrics

#: Chapter 5's named random streams (:class:`iclbook.runtime.Streams`), derived from the chapter's
#: seed. The network is chapter 3's main run at the chapter's first model seed.
STREAMS = {
    "dual-lens": runtime.Stream(width=500),  # the dual-form lens's random-update baseline at checkpoint k
    # the shuffled-label finetuning step (the SimAOU null): one permutation of each context's labels,
    # the same at every checkpoint (index 0), so that checkpoints are compared on the same shuffle
    "dual-shuffle": runtime.Stream(width=1),
    # pruning's null: random mask k of the same size as the magnitude cut, the same k-th mask
    # (the same neurons) at every checkpoint; k < 500 draws
    "prune-null": runtime.Stream(width=500),
    # the bootstrap of layer 1's share of ICL (resamples of the lens sequences)
    "patch-share": runtime.Stream(width=1),
}


@dataclass
class Layer2:
    """Layer 2 of an :class:`InductionNet` at the query, with and without its context."""

    h: torch.Tensor  # (n, T, d) residual stream after layer 1
    att2: torch.Tensor  # (n, T) the query's layer-2 attention
    a_full: torch.Tensor  # (n, d) A(C, x)
    a_red: torch.Tensor  # (n, d) A(x): the query token alone through layer 2
    a_alone: torch.Tensor  # (n, d) the query token alone through both layers


@torch.no_grad()
def layer2(model: ih.InductionNet, tokens: torch.Tensor) -> Layer2:
    """The pieces of :class:`Layer2` for ``tokens`` ``(n, T, d)``."""
    if not isinstance(model, ih.InductionNet):
        raise TypeError(f"the lenses read chapter 3's InductionNet, got {type(model).__name__}")
    h, _ = model.layer1(tokens)
    a_full, att2 = model.layer2_query(h)
    a_red, _ = model.layer2_query(h[:, -1:])
    h_alone, _ = model.layer1(tokens[:, -1:])
    a_alone, _ = model.layer2_query(h_alone)
    return Layer2(h=h, att2=att2, a_full=a_full, a_red=a_red, a_alone=a_alone)


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).double().mean())


def repeat_query(seqs: ih.Sequences, offset: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence with its query replaced by a copy of another context item: the item ``offset``
    places after the (first) item of the query's class, cyclically. Returns the tokens and the
    label that item carries in the context (what in-context learning should answer). Used to ask
    whether a patch built for one query acts on another query of the same context."""
    match = (seqs.classes == seqs.query_class[:, None]).float().argmax(1)
    N = seqs.classes.shape[1]
    other = (match + offset) % N
    tokens = seqs.tokens.clone()
    rows = torch.arange(len(seqs), device=tokens.device)
    item = tokens[rows, 2 * other].clone()  # the item token, with its position slot
    item[rows, seqs.shift + 2 * other] = 0.0  # drop the item's own position
    item[rows, seqs.shift + tokens.shape[1] - 1] = 1.0  # and take the query's
    tokens[:, -1] = item
    return tokens, seqs.context_labels[rows, other]


@torch.no_grad()
def contextual_patch(model: ih.InductionNet, seqs: ih.Sequences, n_patch: int = 256) -> dict[str, float]:
    """Dherin et al.'s lens: layer 2 + the classifier as a contextual block.

    On the first ``n_patch`` sequences (float64 advised) it builds the patch
    ``dW = (W1 (A(C,x) - A(x))) A(x)^T / ||A(x)||^2`` of the classifier's first weight ``W1``.

    Returns ``identity_gap`` (largest ``|logits(W1 + dW; A(x)) - logits(W1; A(C,x))|`` over the
    largest logit, an identity), ``patch_norm`` (mean ``||dW||_F / ||W1||_F``), ``selectivity``
    (mean cosine of the patch's hidden shift ``W1 dA`` with the shift ``W1 V2 h_j`` that the
    matching label token ``j`` would write, minus the mean cosine with the other label tokens),
    and accuracies: ``full`` (the network), ``alone`` (the query without any context),
    ``patched_alone`` (the patch applied to the query without any context: how much of ICL the
    block's patch carries by itself), ``transfer`` / ``transfer_context`` (the patch built for
    one query applied to another item of the same context, read alone through layer 2, against
    the network on that item in context: does the patch act like weights learned for the
    context?), ``transfer_original`` (how often the patched classifier on the other query gives
    the original query's label instead). The nulls: ``mismatched_alone`` (the patch built for
    *another* sequence's context, the next one of the batch, applied to this query without any
    context: a patch of the same kind and size that carries nothing of this context), and
    ``transfer_unpatched`` (the other query read alone with no patch: a no-op update).
    ``two_layer_gap`` / ``two_layer_alone``: the same patch with both attention layers as the
    contextual layer (reduced input ``a_alone``, the query with no context anywhere), which
    rebuilds the in-context logits exactly (an identity) and so the in-context accuracy.
    ``full_each``, ``alone_each``, ``patched_alone_each``, ``mismatched_alone_each``: per-sequence
    correctness (0/1, NumPy), for :func:`gap_share`'s interval.
    ``selectivity_each`` is the per-sequence selectivity ``(n_patch,)`` (NumPy), for intervals;
    ``selectivity_wrong`` (and ``_each``) its null, the same reading toward a label token of
    another class than the query's (the pair after the first matching one, cyclically; sequences
    where that pair matches too are left out), against the remaining non-matching ones."""
    mlp = model.mlp
    part = layer2(model, seqs.tokens[:n_patch])
    target = seqs.target[:n_patch]
    dW = rank_one_update(mlp.w1, part.a_full, part.a_red)  # (n, width, d)
    full = mlp(part.a_full)
    patched = mlp(part.a_red, w1=mlp.w1 + dW)
    gap = float((patched - full).abs().max() / full.abs().max().clamp_min(1e-300))

    shift = (part.a_full - part.a_red) @ mlp.w1.T  # (n, width) = W1 dA
    label_shift = (part.h[:, 1:-1:2] @ model.v2.T) @ mlp.w1.T  # (n, N, width) = W1 V2 h_label
    cos = metrics.cosine(shift.unsqueeze(1), label_shift)  # (n, N)
    match = (seqs.classes[:n_patch] == seqs.query_class[:n_patch, None]).to(cos.dtype)
    on = (cos * match).sum(1) / match.sum(1).clamp_min(1)
    sel = selectivity(shift, label_shift, match)
    # the null: the same reading toward a label token that is not the query's class (the one after
    # the first matching pair, cyclically), against the other non-matching ones
    wrong = torch.nn.functional.one_hot((match.argmax(1) + 1) % match.shape[1], match.shape[1]).to(cos.dtype)
    wrong = wrong * (1 - match)
    rest = (1 - match) * (1 - wrong)
    on_wrong = (cos * wrong).sum(1) / wrong.sum(1).clamp_min(1)
    off_wrong = (cos * rest).sum(1) / rest.sum(1).clamp_min(1)
    wrong_ok = wrong.sum(1) > 0  # a context whose next pair is of the query's class has no such token

    alone = mlp(part.a_alone)
    patched_alone = mlp(part.a_alone, w1=mlp.w1 + dW)
    mismatched_alone = mlp(part.a_alone, w1=mlp.w1 + torch.roll(dW, 1, dims=0))
    # the contextual layer cut after the query's input instead: both attention layers, so the
    # reduced input is the query alone through both (a_alone), and the patch rebuilds A(C, x) exactly
    dW_two = rank_one_update(mlp.w1, part.a_full, part.a_alone)
    two = mlp(part.a_alone, w1=mlp.w1 + dW_two)

    other_tokens, other_target = repeat_query(seqs.map(lambda t: t[:n_patch]))
    other = layer2(model, other_tokens)

    def correct(logits: torch.Tensor) -> np.ndarray:
        return (logits.argmax(-1) == target).double().cpu().numpy()

    return {
        "identity_gap": gap,
        "two_layer_gap": float((two - full).abs().max() / full.abs().max().clamp_min(1e-300)),
        "two_layer_alone": _accuracy(two, target),
        "full_each": correct(full),
        "alone_each": correct(alone),
        "patched_alone_each": correct(patched_alone),
        "mismatched_alone_each": correct(mismatched_alone),
        "patch_norm": float((torch.linalg.matrix_norm(dW) / torch.linalg.matrix_norm(mlp.w1)).mean()),
        "selectivity": float(sel.mean()),
        "selectivity_each": sel.cpu().numpy(),
        "selectivity_wrong": float((on_wrong - off_wrong)[wrong_ok].mean()),
        "selectivity_wrong_each": (on_wrong - off_wrong)[wrong_ok].cpu().numpy(),
        "cos_match": float(on.mean()),
        "full": _accuracy(full, target),
        "alone": _accuracy(alone, target),
        "patched_alone": _accuracy(patched_alone, target),
        "mismatched_alone": _accuracy(mismatched_alone, target),
        "transfer": _accuracy(mlp(other.a_red, w1=mlp.w1 + dW), other_target),
        "transfer_unpatched": _accuracy(mlp(other.a_red), other_target),
        "transfer_original": _accuracy(mlp(other.a_red, w1=mlp.w1 + dW), target),
        "transfer_context": _accuracy(mlp(other.a_full), other_target),
    }


def shuffle_rows(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row of ``labels`` ``(n, N)`` permuted at random: the permutation is drawn where the
    generator lives (the same draw on every device), then applied on the labels' device."""
    perm = torch.argsort(torch.rand(labels.shape, generator=generator, device=generator.device), dim=1)
    return labels.gather(1, perm.to(labels.device))


@torch.no_grad()
def dual_form_update(
    model: ih.InductionNet,
    seqs: ih.Sequences,
    n: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    shuffle_generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Dai et al.'s lens on layer 2.

    ``identity_gap``: the linearised layer 2 (softmax dropped) equals ``W_ZSL q + dW_ICL q``
    (:func:`~iclbook.implicit.dual_form.relaxed_icl`), largest gap over the largest output, an
    identity. ``simaou``: the mean SimAOU (the official code's normalised form) of the real
    (softmax) update of layer 2's output at the query, ``A(C,x) - A(x)``, against the update one
    finetuning step makes: plain gradient descent at ``lr`` on ``V2`` from the context's
    item-label pairs, each shown alone as a query (one token, so its attention is 1 on itself
    and only ``V2`` receives a gradient through layer 2), read at the query alone. The step is
    small, so the cosine is that of the first-order update. ``simaou_random``: the paper's
    random-update baseline. The untrained network (step 0 of the history) is the critics' other
    baseline. ``simaou_shuffled``: the null, the same step with each context's labels permuted
    at random (``shuffle_generator``; seed 0 without one), which keeps the context's items and
    label set but not which label goes with which item. ``simaou_each`` and
    ``simaou_shuffled_each`` are the per-sequence values ``(n,)`` (NumPy), for intervals.
    ``simaou_own`` (and ``_each``): the same comparison against one step on the query itself toward
    its own label, an update that points at the answer; ``simaou_wrong`` (and ``_each``): toward
    another label (the next, cyclically), its null. ``simaou_nodemo``: SimAOU with Dai et al.'s
    reference, the zero-shot output (the query with no demonstration in either layer) instead of
    ``A(x)``; the finetuning step is the same, read at layer 2's input there.
    """
    tokens = seqs.tokens[:n]
    part = layer2(model, tokens)
    # the dual form of the linearised layer 2, one prompt per sequence
    hT = part.h.transpose(-1, -2)  # (n, d, T)
    q = part.h[:, -1] @ model.q2.T  # (n, d)
    dual = dual_form.relaxed_icl(model.k2, model.v2, hT[..., :-1], hT[..., -1:], q)
    gap = float(
        (dual["attention"] - dual["zsl"] - dual["update"]).abs().max() / dual["attention"].abs().max().clamp_min(1e-300)
    )
    # one finetuning step on the context pairs: per sequence dV2 = -lr sum_j g_j h_j^T
    N = seqs.classes.shape[1]
    items = tokens[:, 0 : 2 * N : 2]  # (n, N, d) context items
    h_items, _ = model.layer1(items.reshape(-1, 1, items.shape[-1]))  # each item alone
    h_items = h_items[:, 0]
    labels = seqs.context_labels[: len(tokens)]  # (n, N)
    shuffle = shuffle_generator if shuffle_generator is not None else torch.Generator().manual_seed(0)
    hi, hq = h_items.reshape(len(tokens), N, -1), part.h[:, -1]

    def step(train: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """dV2 ``(n, d, d)`` of one plain gradient step on V2 from ``train`` ``(n, M, d)`` (each
        token shown alone, so layer 2's output is ``h + V2 h``) with labels ``targets`` ``(n, M)``."""
        n_, m_ = targets.shape
        with torch.enable_grad():
            a = (train + train @ model.v2.T).detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(
                model.mlp(a).reshape(n_ * m_, -1), targets.reshape(-1), reduction="sum"
            )
            (g,) = torch.autograd.grad(loss, a)  # dL/da = dL/d(V2 h) per pair
        return -lr * torch.einsum("njd,nje->nde", g, train)

    def shift(dV2: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nde,ne->nd", dV2, at)

    def versus(dV2: torch.Tensor) -> torch.Tensor:
        """SimAOU of ICL's update against the step ``dV2``, both read from the reference A(x)."""
        return metrics.simaou(part.a_full, part.a_red, part.a_red + shift(dV2, hq))

    context_step = step(hi, labels)
    sim = versus(context_step)
    shuffled = versus(step(hi, shuffle_rows(labels, shuffle)))
    # a step on the query itself toward its own label (an update that points at the answer), and
    # toward another label (the next one, cyclically): the reference pair of an "answer" reading
    target = seqs.target[: len(tokens)]
    L = model.mlp.readout.shape[0]
    own = versus(step(hq[:, None], target[:, None]))
    wrong = versus(step(hq[:, None], ((target + 1) % L)[:, None]))
    # Dai et al.'s reference: the zero-shot output, the query with no demonstration anywhere (both
    # layers alone), so ICL's update is A(C, x) - a_alone and the step acts on layer 2's input there
    h_alone = model.layer1(tokens[:, -1:])[0][:, -1]
    nodemo = metrics.simaou(part.a_full, part.a_alone, part.a_alone + shift(context_step, h_alone))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rand = metrics.simaou_random(part.a_full, part.a_red, gen)

    def sem(x: torch.Tensor) -> float:
        return float(x.std() / len(x) ** 0.5) if len(x) > 1 else float("nan")

    return {
        "identity_gap": gap,
        "simaou": float(sim.mean()),
        "simaou_sem": sem(sim),
        "simaou_each": sim.cpu().numpy(),
        "simaou_random": float(rand.mean()),
        "simaou_shuffled": float(shuffled.mean()),
        "simaou_shuffled_sem": sem(shuffled),
        "simaou_shuffled_each": shuffled.cpu().numpy(),
        "simaou_own": float(own.mean()),
        "simaou_own_each": own.cpu().numpy(),
        "simaou_wrong": float(wrong.mean()),
        "simaou_wrong_each": wrong.cpu().numpy(),
        "simaou_nodemo": float(nodemo.mean()),
        "simaou_nodemo_sem": sem(nodemo),
    }


@torch.no_grad()
def same_class_attention(model: ih.InductionNet, seqs: ih.Sequences) -> float:
    """Li et al.'s attention lens: the share of the query's layer-2 attention on the context
    tokens (items and their labels) of its own class."""
    att2 = layer2(model, seqs.tokens).att2
    return float(class_share(att2, seqs.classes, seqs.query_class).mean())


def class_share(att2: torch.Tensor, classes: torch.Tensor, query_class: torch.Tensor) -> torch.Tensor:
    """The share of the query's layer-2 attention ``att2`` ``(n, 2N + 1)`` (context tokens item,
    label, item, label, ..., then the query) on the context tokens, items and labels, of the
    pairs whose class ``classes`` ``(n, N)`` is the query's ``query_class`` ``(n,)``: ``(n,)``."""
    match = (classes == query_class[:, None]).to(att2.dtype).repeat_interleave(2, dim=1)
    return (att2[:, :-1] * match).sum(1)


@torch.no_grad()
def pruning_curve(
    model: ih.InductionNet,
    seqs: ih.Sequences,
    rates: list[float],
    how: str = "magnitude",
    generator: torch.Generator | None = None,
) -> list[float]:
    """Li et al.'s pruning lens: accuracy on ``seqs`` with a share ``rate`` of the classifier's
    first-layer neurons silenced, by the norm of their input weights (``"magnitude"``: smallest
    first, as Li et al. prune; ``"random"`` is the control)."""
    z = internals.read(model, seqs.tokens, "query_state")
    norms = model.mlp.w1.norm(dim=1)
    out = []
    for rate in rates:
        mask = patterns.pruning_mask(norms, rate, how, generator).to(z.dtype)
        out.append(_accuracy(model.mlp(z, mask1=mask), seqs.target))
    return out


@torch.no_grad()
def random_pruning(
    model: ih.InductionNet, seqs: ih.Sequences, rate: float, generators: Sequence[torch.Generator]
) -> np.ndarray:
    """The null of the pruning lens: accuracy on ``seqs`` with a random share ``rate`` of the
    classifier's first-layer neurons silenced, one accuracy per generator of ``generators`` (one
    random mask each, the masks of :func:`pruning_curve`'s ``"random"``), all masks in one batched
    pass. Returns ``(len(generators),)``."""
    if not len(generators):
        raise ValueError("random pruning's null needs at least one generator (one mask per draw)")
    z = internals.read(model, seqs.tokens, "query_state")
    norms = model.mlp.w1.norm(dim=1)
    masks = torch.stack([patterns.pruning_mask(norms, rate, "random", g) for g in generators]).to(z.dtype)
    logits = model.mlp(z, mask1=masks[:, None, :])  # (draws, n, L)
    return (logits.argmax(-1) == seqs.target).double().mean(-1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Reading a run: every lens at every checkpoint, and the points the chapter compares
# ---------------------------------------------------------------------------------------------


def read_checkpoint(
    model: ih.InductionNet,
    seqs: ih.Sequences,
    seqs64: ih.Sequences,
    rates: list[float],
    *,
    dual_generator: torch.Generator,
    shuffle_generator: torch.Generator,
    prune_generators: Sequence[torch.Generator],
    null_rate: float,
    n_show: int = 12,
) -> dict:
    """Every lens on one checkpoint: the patch and dual-form lenses in float64 on ``seqs64`` (a
    float64 copy of the model reads them, so that their identities are checked exactly), the
    attention and pruning lenses on ``seqs``. Keys: ``patch_*`` (:func:`contextual_patch`),
    ``dual_*`` (:func:`dual_form_update`), ``same_class``, the magnitude-pruning curve
    ``prune_magnitude`` (one accuracy per rate of ``rates``), the largest-first curve
    ``prune_largest``, and their null ``prune_random_draws`` (:func:`random_pruning` at
    ``null_rate``, one accuracy per generator of ``prune_generators``). For the chapter's explorer,
    what the two attention layers do on the first ``n_show`` sequences: ``att1_example`` (layer
    1's map of the first one, ``(T, T)``) and ``att2_examples`` (the query's layer-2 row of each,
    ``(n_show, T)``)."""
    m64 = copy.deepcopy(model).double()
    row = {f"patch_{key}": v for key, v in contextual_patch(m64, seqs64).items()}
    dual = dual_form_update(m64, seqs64, generator=dual_generator, shuffle_generator=shuffle_generator)
    row.update({f"dual_{key}": v for key, v in dual.items()})
    row["same_class"] = same_class_attention(model, seqs)
    row["prune_magnitude"] = pruning_curve(model, seqs, rates)
    row["prune_largest"] = pruning_curve(model, seqs, rates, "largest")
    row["prune_random_draws"] = random_pruning(model, seqs, null_rate, prune_generators)
    with torch.no_grad():
        att1, att2 = model.attention(seqs.tokens[:n_show])
    row["att1_example"] = att1[0].cpu().numpy()
    row["att2_examples"] = att2.cpu().numpy()
    return row


def pruning_drop(row: Mapping[str, Any], rates: Sequence[float], rate: float, how: str = "magnitude") -> float:
    """Accuracy lost when a share ``rate`` of the classifier's first-layer neurons is pruned: the
    checkpoint's pruning curve ``row["prune_<how>"]`` (read at ``rates``, the first of which is 0)
    at ``rate`` against its unpruned start."""
    if rates[0] != 0:
        raise ValueError(f"the pruning curve must start at rate 0 (no pruning), got rates {list(rates)}")
    curve = row[f"prune_{how}"]
    return curve[0] - curve[list(rates).index(rate)]


def random_drops(row: Mapping[str, Any], rates: Sequence[float]) -> np.ndarray:
    """Accuracy lost under each random mask of the checkpoint's null ``row["prune_random_draws"]``,
    against the unpruned accuracy (the magnitude curve at rate 0, ``rates[0] == 0``)."""
    if rates[0] != 0:
        raise ValueError(f"the pruning curve must start at rate 0 (no pruning), got rates {list(rates)}")
    return row["prune_magnitude"][0] - np.asarray(row["prune_random_draws"], dtype=float)


def selectivity(shift: torch.Tensor, label_shift: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Dherin et al.'s lens, read per sequence: the mean cosine of the patch's hidden shift
    ``shift`` ``(n, h)`` with the shifts ``label_shift`` ``(n, N, h)`` that the label tokens of the
    query's class would write (``match`` ``(n, N)`` booleans), minus its mean cosine with the
    other label tokens' shifts: ``(n,)``. (:func:`contextual_patch` computes the same.)"""
    cos = metrics.cosine(shift.unsqueeze(1), label_shift)
    m = match.to(cos.dtype)
    return (cos * m).sum(1) / m.sum(1).clamp_min(1) - (cos * (1 - m)).sum(1) / (1 - m).sum(1).clamp_min(1)


def share_of_gap(full: Sequence[float], alone: Sequence[float], part: Sequence[float]) -> float:
    """``(mean(part) - mean(alone)) / (mean(full) - mean(alone))``: the share of the gap between
    the query alone and the network in context that ``part`` closes, from per-sequence accuracies
    (0/1) of the same sequences (:func:`gap_share` adds its interval). NaN where the gap is under
    0.05: nothing to share."""
    f, a, p = (float(np.mean(np.asarray(x, dtype=float))) for x in (full, alone, part))
    return (p - a) / (f - a) if f - a >= 0.05 else math.nan


def gap_share(
    full: Sequence[float],
    alone: Sequence[float],
    part: Sequence[float],
    generator: torch.Generator,
    *,
    draws: int = 2000,
    level: float = 0.95,
) -> dict[str, Any]:
    """The share of the gap between the query alone and the network in context that ``part``
    closes: ``(mean(part) - mean(alone)) / (mean(full) - mean(alone))``, from per-sequence
    correctness (0/1) of the same sequences, with a percentile bootstrap interval (``draws``
    resamples of the sequences, paired across the three). ``gap`` is the mean gap; the share is
    NaN where it is under 0.05 (nothing to share) and the interval leaves out resamples whose gap
    is."""
    f, a, p = (torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64) for x in (full, alone, part))
    if not (f.shape == a.shape == p.shape) or f.dim() != 1 or len(f) < 2:
        raise ValueError(f"need three per-sequence vectors of one length >= 2, got {f.shape}, {a.shape}, {p.shape}")

    def ratio(fm: torch.Tensor, am: torch.Tensor, pm: torch.Tensor) -> torch.Tensor:
        gap = fm - am
        return torch.where(gap >= 0.05, (pm - am) / gap.clamp_min(1e-12), torch.nan)

    share = float(ratio(f.mean(), a.mean(), p.mean()))
    idx = torch.randint(len(f), (draws, len(f)), generator=generator)
    boot = ratio(f[idx].mean(1), a[idx].mean(1), p[idx].mean(1))
    boot = boot[~torch.isnan(boot)]
    lo = (1 - level) / 2
    interval = (
        (float(torch.quantile(boot, lo)), float(torch.quantile(boot, 1 - lo))) if len(boot) else (math.nan, math.nan)
    )
    return {"share": share, "interval": interval, "gap": float(f.mean() - a.mean())}


def layer_shares(
    model: ih.InductionNet, seqs: ih.Sequences, generator: torch.Generator, *, chunk: int = 256
) -> dict[str, Any]:
    """Where the context enters, read on every sequence of ``seqs`` (float64, ``chunk`` at a time):
    the share of ICL (the gap in accuracy between the query alone and the network in context) that
    layer 2's rank-1 patch restores when applied to the query with no context at all
    (``layer2``, :func:`gap_share` with its bootstrap ``interval``, drawn from ``generator``), and
    the same share for another sequence's patch (``null``). What layer 2's patch leaves is layer
    1's share: the context's effect on the query's own stream before layer 2. Both attention
    layers taken together as the contextual layer leave nothing (``two_layer_gap``, an identity)."""
    m64 = copy.deepcopy(model).double()
    keys = ("full_each", "alone_each", "patched_alone_each", "mismatched_alone_each")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    gap = 0.0
    for i in range(0, len(seqs), chunk):
        sub = seqs.map(lambda t, i=i: t[i : i + chunk])
        sub.tokens = sub.tokens.double()
        read = contextual_patch(m64, sub, n_patch=chunk)
        gap = max(gap, read["two_layer_gap"])
        for k in keys:
            parts[k].append(read[k])
    full, alone, patched, mismatched = (np.concatenate(parts[k]) for k in keys)
    state = generator.get_state()
    layer2 = gap_share(full, alone, patched, generator)
    generator.set_state(state)  # the same resamples for the null
    return {
        "layer2": layer2,
        "null": gap_share(full, alone, mismatched, generator),
        "two_layer_gap": gap,
        "n": len(full),
    }


def plateau_checkpoint(
    steps: Sequence[float], ic: Sequence[float], onset: float, base: float, band: float = 0.05
) -> int:
    """The index of the checkpoint that stands for the plateau: the middle one of those before IC
    accuracy's onset whose accuracy lies within ``band`` of the random-context-label level
    ``base`` (B/N); the middle checkpoint of the run when none does (a run without a plateau)."""
    if len(steps) != len(ic) or not len(steps):
        raise ValueError(f"need one IC accuracy per step, got {len(steps)} steps and {len(ic)} values")
    on = [i for i, (s, a) in enumerate(zip(steps, ic)) if s < onset and abs(a - base) <= band]
    return on[len(on) // 2] if on else len(steps) // 2


def half_change(steps: Sequence[float], values: Sequence[float], start: int) -> float:
    """The first step, from checkpoint ``start`` on, at which a measure has made half of its change
    from its value there to its last value (NaN when it does not change)."""
    x, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    first, end = v[start], v[-1]
    moved = (v[start:] - first) * np.sign(end - first) >= 0.5 * abs(end - first)
    return float(x[start:][np.argmax(moved)]) if abs(end - first) > 0 and moved.any() else float("nan")


def change_across(
    steps: Sequence[float],
    means: Sequence[float],
    each_from: Sequence[float],
    each_to: Sequence[float],
    *,
    untrained: int,
    plateau: int,
    end: int,
    z: float = 1.96,
) -> dict[str, Any]:
    """How much a lens changes from the plateau checkpoint to the end, against how much it changed
    before: the question "does it change at the cliff?".

    ``means`` is the lens's mean per checkpoint (at ``steps``); ``each_from`` / ``each_to`` its
    per-sequence values at ``plateau`` and ``end`` (the same sequences, so the change is paired).
    Returns ``change`` (the mean of ``each_to - each_from``) with its ``interval`` (``± z``
    standard errors) and ``before``, the change from ``untrained`` to ``plateau``: what training
    without the induction head did to the lens, the rival of a change "at the cliff"."""
    if len(steps) != len(means):
        raise ValueError(f"need one mean per step, got {len(steps)} steps and {len(means)} means")
    d = np.asarray(each_to, dtype=float) - np.asarray(each_from, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need per-sequence values of the same length >= 2, got shape {d.shape}")
    change, se = float(d.mean()), float(d.std(ddof=1) / len(d) ** 0.5)
    before = float(means[plateau]) - float(means[untrained])
    return {"change": change, "interval": (change - z * se, change + z * se), "before": before}


# ---------------------------------------------------------------------------------------------
# The cliff explorer: what each lens sees at one checkpoint, beside its curves over training
# ---------------------------------------------------------------------------------------------

#: The explorer's top-row curves: panel title, then (series key, label, style) per line.
EXPLORER_CURVES = (
    (
        "(a) Reddy: progress measures",
        (("IC", "IC accuracy", "-"), ("ILA1", "ILA1", "-"), ("TILA2", "TILA2", "-"), ("CLA", "CLA", "-")),
    ),
    (
        "(b) Dherin: the rank-1 patch",
        (
            ("patch_selectivity", "selectivity", "-"),
            ("patch_selectivity_wrong", "null: another class", ":"),
            ("patch_patch_norm", "‖ΔW‖/‖W‖", "--"),
            ("patch_patched_alone", "patch on the query alone: acc.", "-"),
        ),
    ),
    (
        "(c) Dai: SimAOU of ICL's update",
        (
            ("dual_simaou", "vs the context's step", "-"),
            ("dual_simaou_shuffled", "null: shuffled labels", ":"),
            ("dual_simaou_own", "vs a step to the answer", "--"),
            ("dual_simaou_wrong", "vs a step to a wrong label", ":"),
        ),
    ),
    (
        "(d) Li: attention and pruning",
        (
            ("same_class", "attention on own class", "-"),
            ("drop_magnitude", "lost, smallest 30% pruned", "-"),
            ("drop_largest", "lost, largest 30% pruned", "--"),
            ("drop_random", "lost, random 30% (mean)", ":"),
        ),
    ),
)


def explorer(
    series: Mapping[str, Sequence[float]],
    snapshots: Sequence[Mapping[str, Any]],
    *,
    base: float,
    uniform: float,
    same_class_tokens: np.ndarray,
    band: tuple[float, float] | None = None,
) -> tuple[Any, Any]:
    """Chapter 5's cliff explorer: a figure and ``draw(k)``, which shows checkpoint ``k`` (for
    :func:`iclbook.plots.scrubber`). Top row: each lens's curves over training
    (:data:`EXPLORER_CURVES`, read from ``series``: name -> one value per checkpoint, with
    ``"step"``), a cursor at the checkpoint and its values marked. Bottom row, what each lens sees
    there (``snapshots[k]``, a :func:`read_checkpoint` row): layer 1's attention map of one
    sequence (a previous-token head is its sub-diagonal); the per-sequence selectivity of the
    patch against its null; the per-sequence SimAOU against the shuffled-label step; the query's
    layer-2 attention on a dozen sequences, with the context tokens of its own class outlined
    (``same_class_tokens``: ``(n_show, T - 1)`` booleans). ``base`` is B/N, ``uniform`` the
    uniform attention share on a class (2/T); ``band`` the cliff's (onset, top) steps, shaded."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from iclbook import plots  # noqa: PLC0415

    x = np.asarray(series["step"], dtype=float)
    n = len(x)
    if len(snapshots) != n:
        raise ValueError(f"one snapshot per checkpoint: {n} steps, {len(snapshots)} snapshots")
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.2), gridspec_kw={"height_ratios": [1, 1.05]}, layout="none")
    colours = plots.colors(4)
    cursors, dots = [], []
    for ax, (title, lines) in zip(axes[0], EXPLORER_CURVES):
        if band is not None and all(np.isfinite(band)):
            ax.axvspan(*band, color="grey", alpha=0.12)
        ys = []
        for (key, label, style), colour in zip(lines, colours):
            y = np.asarray(series[key], dtype=float)
            ax.plot(x, y, style, color=colour, lw=1.4, label=label)
            ys.append(y)
        if title.startswith("(a)"):
            ax.axhline(base, color="k", lw=0.7, ls=":", label="B/N")
        if title.startswith("(d)"):
            ax.axhline(uniform, color=colours[0], lw=0.7, ls=":")
        ax.axhline(0, color="k", lw=0.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        lo = min(-0.05, float(np.nanmin(ys)) - 0.03)
        ax.set_ylim(lo, 1.02)
        cursors.append(ax.axvline(x[0], color="k", lw=1.2))
        dots.append((ax.scatter([x[0]] * len(ys), [y[0] for y in ys], c=colours[: len(ys)], s=28, zorder=5), ys))
    att_ax, sel_ax, sim_ax, att2_ax = axes[1]
    bins_sel = np.linspace(-0.4, 1.0, 36)
    bins_sim = np.linspace(-0.6, 1.0, 33)

    def hist(ax: Any, ours: np.ndarray, null_values: np.ndarray, bins: np.ndarray, names: tuple[str, str]) -> None:
        ax.hist(np.clip(null_values, bins[0], bins[-1]), bins=bins, color="grey", alpha=0.55, label=names[1])
        ax.hist(np.clip(ours, bins[0], bins[-1]), bins=bins, color=colours[0], alpha=0.7, label=names[0])
        ax.axvline(0, color="k", lw=0.5)
        ax.set_ylim(0, len(ours) * 0.45)
        ax.set_ylabel("sequences", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")

    def draw(k: int) -> None:
        for c in cursors:
            c.set_xdata([x[k], x[k]])
        for scatter, ys in dots:
            scatter.set_offsets(np.column_stack([[x[k]] * len(ys), [y[k] for y in ys]]))
        s = snapshots[k]
        for ax in axes[1]:
            ax.cla()
        att1 = np.asarray(s["att1_example"], dtype=float)
        att_ax.imshow(att1, cmap="viridis", vmin=0, vmax=1, aspect="equal")
        att_ax.set_title("layer 1's attention, one sequence\n(previous-token head: the sub-diagonal)", fontsize=9)
        att_ax.set(xlabel="key token", ylabel="query token", xticks=[], yticks=[])
        hist(
            sel_ax,
            s["patch_selectivity_each"],
            s["patch_selectivity_wrong_each"],
            bins_sel,
            ("selectivity toward the matching label", "null: toward another class's label"),
        )
        sel_ax.set_title("the patch's selectivity, per sequence", fontsize=9)
        hist(
            sim_ax,
            s["dual_simaou_each"],
            s["dual_simaou_shuffled_each"],
            bins_sim,
            ("SimAOU vs the context's step", "null: shuffled labels"),
        )
        sim_ax.set_title("SimAOU per sequence", fontsize=9)
        att2 = np.asarray(s["att2_examples"], dtype=float)[:, :-1]
        att2_ax.imshow(att2, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        rows, cols = np.nonzero(same_class_tokens)
        att2_ax.scatter(cols, rows, marker="s", s=60, facecolors="none", edgecolors="white", linewidths=0.9)
        att2_ax.set_title("the query's layer-2 attention, 12 sequences\n(outlined: tokens of its class)", fontsize=9)
        att2_ax.set(xlabel="context token (item, label, ...)", ylabel="sequence", xticks=[], yticks=[])
        ic = series["IC"][k]
        fig.suptitle(f"Checkpoint at step {x[k]:.0f} of {x[-1]:.0f}: IC accuracy {ic:.2f}", fontsize=12)

    draw(0)  # the layout is fixed once, with every panel drawn, so that frames do not jitter
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig, draw
