"""The tiny GPT's pretraining: its objective, the recipe (:class:`PretrainConfig`), the loop, the
readings of a pretrained model on held-out episodes, and the shipped checkpoints.

The chapter never pretrains: it loads the model that ``python -m iclbook.implicit.retrain`` (the
command, :mod:`.retrain`) pretrained once with this recipe and that ships with the library
(:func:`load_shipped`, which checks the weights against the SHA-256 of their training record).

Example::

    model, record = load_shipped()                         # the shipped model, eval mode
    batch = data.pretraining_batch(64, 160, torch.Generator().manual_seed(0))
    label_accuracy_by_context(model, batch)                # {"acc_0_0": ..., "acc_9_99": ...}
"""

from __future__ import annotations

import hashlib
import json
import math
import random
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
from iclbook.implicit import data, world
from iclbook.implicit.model import LMConfig, TinyLM

# ---------------------------------------------------------------------------------------------
# The objective and the readings of a pretrained model
# ---------------------------------------------------------------------------------------------

#: Token ids of the templates' label markers ("Label:", "Sentiment:"...): the next token is a label.
MARKERS = torch.tensor(sorted({data.TOKEN_ID[t.marker] for t in data.TASKS.values()}))


def label_accuracy_by_context(
    model: TinyLM, batch: torch.Tensor, logits: torch.Tensor | None = None
) -> dict[str, float]:
    """Accuracy of the label tokens of pretraining episodes, by number of examples before them
    (the pretraining log of ``retrain`` and the chapter's held-out check). ``logits``: the
    model's on ``batch[:, :-1]`` if already computed."""
    with torch.no_grad():
        pred = (model(batch[:, :-1]) if logits is None else logits).argmax(-1)
    target = batch[:, 1:]
    is_label = torch.isin(batch[:, :-1], MARKERS)
    seen = torch.cumsum(batch[:, :-1] == data.TOKEN_ID[data.SEP], 1)
    out = {}
    for lo, hi in ((0, 0), (1, 3), (4, 8), (9, 99)):
        m = is_label & (seen >= lo) & (seen <= hi)
        out[f"acc_{lo}_{hi}"] = round(float((pred[m] == target[m]).float().mean()), 4)
    return out


def lm_loss(
    model: nn.Module,
    tokens: torch.Tensor,
    label_weight: float = 1.0,
    markers: torch.Tensor = MARKERS,
    pad_id: int = data.TOKEN_ID[data.PAD],
) -> torch.Tensor:
    """Next-token cross-entropy over every non-pad target of ``tokens (batch, n+1)``, a weighted
    mean in which the targets that follow one of ``markers`` (the label words) count
    ``label_weight`` times (1 = the plain language-model loss). The defaults are the first
    world's (:mod:`.data`); the inference world's are :data:`.world.LABEL_MARKERS` and its pad."""
    logits = model(tokens[:, :-1])
    target = tokens[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view_as(target)
    weight = (target != pad_id).float()
    if label_weight != 1.0:
        is_label = torch.isin(tokens[:, :-1], markers)
        weight = weight * torch.where(is_label, label_weight, 1.0)
    return (nll * weight).sum() / weight.sum()


def perplexity_by_length(
    model: nn.Module, tokens: torch.Tensor, lengths, logits: torch.Tensor | None = None
) -> dict[int, float]:
    """Perplexity of ``tokens (batch, n+1)`` cut at each of ``lengths`` tokens (the paper's
    Table 6 split, "valid @256/512/1024"), from one forward pass: a causal model's loss on the
    first ``L`` positions is its loss on the sequence cut at ``L`` (equals
    ``exp(lm_loss(model, tokens[:, :L + 1]))``). ``logits``: the model's on ``tokens[:, :-1]``
    if already computed."""
    if logits is None:
        with torch.no_grad():
            logits = model(tokens[:, :-1])
    target = tokens[:, 1:]
    if max(lengths) > target.shape[1] or min(lengths) < 1:
        raise ValueError(f"lengths must lie in 1..{target.shape[1]}, got {tuple(lengths)}")
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view_as(target)
    weight = (target != data.TOKEN_ID[data.PAD]).float()
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

    #: the world whose text this recipe reads (:mod:`.data`), its label markers and padding
    world_name = "lookup"
    markers = MARKERS
    pad_id = data.TOKEN_ID[data.PAD]

    def generator(self) -> torch.Generator:
        return runtime.generator(self.seed)

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """One batch of pretraining text."""
        return data.pretraining_batch(self.batch, self.seq_len, gen, self.p_canonical, self.p_plain)


@dataclass(frozen=True)
class InferencePretrainConfig:
    """The recipe of the second model, on the inference world's text (:mod:`.world`): catalogues
    in pretraining's own formats, documents with verdicts, repeated text. The same optimiser and
    schedule as :class:`PretrainConfig`."""

    steps: int = 4500
    # 48 rows: at 24 the recipe learned to use demonstrations at one pretraining seed of three,
    # at 48 at all three (benchmarks/README, issue 31; Kirsch et al. 2022 find larger batches
    # shorten the plateau before in-context learning). The momentum study keeps 24.
    batch: int = 48
    seq_len: int = 256  # the evaluation prompts' length: sinusoidal positions do not extrapolate
    lr: float = 3e-3
    warmup: int = 200
    clip: float = 1.0
    p_catalogue: float = 0.6
    p_repeat: float = 0.15
    p_canonical: float = 0.3
    p_verdict: float = 0.5
    p_clear: float = 0.4  # catalogues of clear-cut inputs (world.CLEAR_LEAN)
    p_echo: float = 0.25  # chance that a catalogue lists an earlier entry again
    # trials' switches, off (world.pretraining_batch; benchmarks/README, issue 31): catalogue
    # formats of ordinary words, template words as ordinary words of documents
    p_word_formats: float = 0.0
    p_template_words: float = 0.0
    label_weight: float = 5.0
    seed: int = 0

    world_name = "inference"
    markers = world.LABEL_MARKERS
    pad_id = world.TOKEN_ID[data.PAD]

    def generator(self) -> random.Random:
        return random.Random(self.seed)

    def draw(self, rng: random.Random) -> torch.Tensor:
        """One batch of pretraining text."""
        return world.pretraining_batch(
            self.batch,
            self.seq_len,
            rng,
            self.p_catalogue,
            self.p_repeat,
            self.p_canonical,
            self.p_verdict,
            self.p_clear,
            self.p_echo,
            self.p_word_formats,
            self.p_template_words,
        )


def pretrain(
    model: TinyLM,
    cfg: PretrainConfig | InferencePretrainConfig,
    *,
    log_every: int = 50,
    evaluate: Any = None,
    eval_every: int | None = None,
    on_eval: Any = None,
) -> dict[str, Any]:
    """Pretrain ``model`` in place on the text of ``cfg``'s world (``cfg.draw``).

    ``evaluate(model) -> dict`` (optional) runs every ``eval_every`` steps; its values join the
    history, and ``on_eval(model, history)`` (optional) is called after it (to save a
    checkpoint). Returns the history: steps, losses, evaluations, seconds, tokens, the configs."""
    if cfg.seq_len > model.cfg.max_len:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's max_len={model.cfg.max_len}")
    gen = cfg.generator()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))

    history: dict[str, Any] = {"step": [], "loss": [], "evals": [], "model": asdict(model.cfg), "pretrain": asdict(cfg)}
    if cfg.world_name != "lookup":
        history["world"] = cfg.world_name

    start = time.perf_counter()
    bar = tqdm(
        range(cfg.steps), desc="pretrain", file=sys.stderr, mininterval=1.0, disable=not runtime.progress_enabled()
    )
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = cfg.draw(gen)
        loss = lm_loss(model, batch, cfg.label_weight, cfg.markers, cfg.pad_id)
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
