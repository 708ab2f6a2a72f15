"""What chapter 3 measures on a network, at every checkpoint of a training run and after it:
accuracy on each evaluation set, the test loss, the induction-head progress measures, the
classifier's activity.

The training loop records :func:`measure` in the history of every run, so this module is part
of what trains a cached model (:mod:`iclbook.induction.training` imports it): what the chapter
only *decides* from those histories lives in :mod:`iclbook.induction.analysis`.
"""

from __future__ import annotations

import torch
from torch import nn

from iclbook import internals
from iclbook.induction.data import Sequences
from iclbook.induction.model import InductionNet, MinimalNet

#: Sequences per forward pass in the evaluations (memory at the paper profile's 10,000).
EVAL_CHUNK = 2000


@torch.no_grad()
def readout(model: nn.Module, seqs: Sequences, chunk: int = EVAL_CHUNK) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(n, L)`` logits of ``seqs`` and the classifier's three ReLU layers ``(n, width)`` each,
    from one forward pass (in chunks of ``chunk`` sequences)."""
    logits, acts = [], []
    for i in range(0, len(seqs), chunk):
        h = model.mlp.hidden(model.query_state(seqs.tokens[i : i + chunk]))
        acts.append(h)
        logits.append(h[-1] @ model.mlp.readout.T)  # = model(tokens), the same operations
    return torch.cat(logits), [torch.cat(layer) for layer in zip(*acts)]


def predict(model: nn.Module, seqs: Sequences, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """``(n,)`` the predicted label of each sequence (the largest logit)."""
    return readout(model, seqs, chunk)[0].argmax(-1)


@torch.no_grad()
def progress_measures(
    model: InductionNet | MinimalNet,
    seqs: Sequences,
    pred: torch.Tensor | None = None,
    attention: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """The induction-head measures on a set of bursty sequences (the IC set in the chapter).

    * ``ILA1``: layer-1 attention from each label token to the item just before it;
    * ``TILA2``: layer-2 attention from the query to the label(s) whose item has the query's class;
    * ``TLA2``: layer-2 attention from the query to all label tokens;
    * ``CLA``: fraction of predictions that are one of the context's labels (``pred``: the
      model's predictions on ``seqs`` where already computed).

    ``attention``: the model's ``induction_attention`` on ``seqs`` where already computed.
    """
    previous, on_labels = model.induction_attention(seqs.tokens) if attention is None else attention
    ila1 = previous.mean()
    pred = predict(model, seqs) if pred is None else pred
    return {
        "ILA1": float(ila1),
        "TILA2": target_label_attention(on_labels, seqs.classes, seqs.query_class),
        "TLA2": float(on_labels.sum(1).mean()),
        "CLA": context_label_share(pred, seqs.context_labels),
    }


def target_label_attention(on_labels: torch.Tensor, classes: torch.Tensor, query_class: torch.Tensor) -> float:
    """TILA2: the query's layer-2 attention on the label tokens ``on_labels`` ``(n, N)`` whose item has
    the query's class (``classes`` ``(n, N)``, ``query_class`` ``(n,)``), summed over labels and
    averaged over sequences."""
    match = (classes == query_class[:, None]).float()
    return float((on_labels * match).sum(1).mean())


def context_label_share(pred: torch.Tensor, context_labels: torch.Tensor) -> float:
    """CLA: the share of predictions ``pred`` ``(n,)`` that are one of their own context's labels
    ``context_labels`` ``(n, N)``."""
    return float((context_labels == pred[:, None]).any(dim=1).float().mean())


@torch.no_grad()
def measure(model: InductionNet | MinimalNet, sets: dict[str, Sequences]) -> dict[str, float]:
    """Accuracy on each evaluation set, the test loss, the progress measures on IC, the active
    share of each ReLU layer (``live``: the smallest; when a layer's share falls towards 0 it
    goes silent and passes almost no gradient), the logit spread (the mean over labels of the
    logits' standard deviation across test sequences: 0 when the output no longer depends on
    the input) and the three biases. One forward pass per set, reused by every measure; with
    only some sets given (``"test"`` among them), the measures of the others are left out."""
    if "test" not in sets:
        raise ValueError(f"measure needs the test set; got {sorted(sets)}")
    passes, attention = {}, None
    for name, s in sets.items():
        if name == "IC" and len(s) <= EVAL_CHUNK:  # one pass: the maps recorded on the way to the logits
            with internals.recording(model) as acts:
                passes[name] = readout(model, s)
            attention = model.induction_attention_from(acts)
        else:
            passes[name] = readout(model, s)
    out = {name: float((passes[name][0].argmax(-1) == s.target).float().mean()) for name, s in sets.items()}
    logits, acts = passes["test"]
    out["loss"] = float(nn.functional.cross_entropy(logits, sets["test"].target))
    if "IC" in sets:
        out.update(progress_measures(model, sets["IC"], passes["IC"][0].argmax(-1), attention))
    live = [float((a > 0).float().mean()) for a in acts]
    out.update({f"live{i}": v for i, v in enumerate(live, 1)})
    out["live"] = min(live)
    out["spread"] = float(logits.std(dim=0).mean())
    out.update({f"b{i}": getattr(model.mlp, f"b{i}").item() for i in (1, 2, 3)})
    return out
