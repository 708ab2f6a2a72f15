"""Chapter 2's second model: the tiny GPT pretrained on the inference world (:mod:`.world`), its
data splits, and the gates it must pass before any of the paper's statistics is read on it.

The protocol is the first model's (:func:`.experiment.run_task`), given this world's splits and
codec::

    model, record = load()
    run = experiment.run_task(model, "sst2", cfg, seed, data=splits("sst2", cfg, seed), codec=world.WORLD)
    gate_rows({"sst2": run})          # chance, zero-shot, ICL and the two readers per task

The gates are read at every pretraining seed of the recipe that ships (:func:`seed_folders`).
Its momentum study (the paper's momentum attention, Eq. 15) reads the models of
:data:`MOMENTUM_FOLDER`, the recipe with other momenta and seeds at the batch it first had::

    rows = momentum_study(momentum_folders(), held_out_text(256, seed), tests, k=16, demo_generator=gen)
    momentum_contrast(rows, "ppl", 0.9)  # difference, its 95% interval, the relabelling null
    perplexity_by_kind(momentum_folders(), 64, seed)  # where the cost sits: documents, copying
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from iclbook.implicit import probe, readers, world
from iclbook.implicit.data import Dataset
from iclbook.implicit.model import TinyLM
from iclbook.implicit.pretrain import WEIGHTS, InferencePretrainConfig, load_shipped, perplexity_by_length
from iclbook.patterns.nulls import relabellings, welch_interval

#: Where the second model ships (``python -m iclbook.implicit.retrain --world inference``).
FOLDER = WEIGHTS / "inference"
#: The same recipe at other pretraining seeds: one subfolder ``seed<seed>`` each, ``python -m
#: iclbook.implicit.retrain --world inference --seed s`` (``make retrain``), for the gates.
SEED_FOLDER = WEIGHTS / "inference_seeds"
#: The second model's momentum study: one subfolder ``eta<eta>_seed<seed>`` per momentum and
#: pretraining seed, each ``python -m iclbook.implicit.retrain --world inference --momentum eta
#: --seed s --set batch=24`` (``make retrain``): the recipe at the batch it had when the study
#: was trained, 24 rows, where it learned to use demonstrations at seed 0 alone.
MOMENTUM_FOLDER = WEIGHTS / "inference_momentum"
#: Momentum at the shipped recipe's 48 rows a step: ``eta0.9_seed<seed>``, each ``python -m
#: iclbook.implicit.retrain --world inference --momentum 0.9 --seed s`` (``make retrain``). Its
#: arm without momentum is the shipped model and its other seeds (:func:`seed_folders`).
MOMENTUM48_FOLDER = WEIGHTS / "inference_momentum48"


def load(folder: Path | str = FOLDER) -> tuple[TinyLM, dict[str, Any]]:
    """The shipped inference model (eval mode) and its training record (SHA-256 checked)."""
    return load_shipped(folder)


def splits(name: str, cfg: Any, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """(pool, dev, test) of task ``name`` in the inference world, sized by ``cfg`` (``pool``,
    ``n_dev``, ``n_test``), for evaluation seed ``seed``."""
    return (
        world.make_dataset(name, cfg.pool, seed, split="train"),
        world.make_dataset(name, cfg.n_dev, seed, split="dev"),
        world.make_dataset(name, cfg.n_test, seed, split="test"),
    )


def reader_accuracies(run: Any) -> dict[str, float]:
    """The model-free readers on a run's own demonstrations and test set: the two nulls of
    :mod:`.readers` (``closest``, ``one_token``) and the ceiling, the world's ideal reader that
    infers the data set's sense from the demonstrations (``sense``, :func:`.world.sense_reader`)."""
    task = run.test.task
    demos = [(x, task.labels.index(y)) for x, y in run.demos]
    out = {}
    for key, reader in (("closest", readers.closest_demo), ("one_token", readers.one_token)):
        pred = reader(demos, run.test.inputs, task.n_classes)
        out[key] = float((pred == run.test.classes).float().mean())
    out["sense"] = float((world.sense_reader(task, demos, run.test.inputs) == run.test.classes).float().mean())
    return out


def gate_rows(runs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per task: chance (1 / classes), zero-shot (Z) and ICL (I) accuracy of the run, and the
    readers' accuracies on the same demonstrations and test examples."""
    out = {}
    for name, run in runs.items():
        out[name] = {
            "chance": 1.0 / run.test.task.n_classes,
            "Z": run.acc["Z"],
            "I": run.acc["I"],
            **reader_accuracies(run),
        }
    return out


# ---------------------------------------------------------------------------------------------
# The momentum study
# ---------------------------------------------------------------------------------------------


def _model_folders(folder: Path, what: str) -> list[Path]:
    """Every subfolder of ``folder`` that holds a checkpoint, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no {what} at {folder}; run make retrain")
    return sorted(p for p in folder.iterdir() if (p / "tinylm.pt").exists())


def seed_folders(folder: Path | str = SEED_FOLDER) -> list[Path]:
    """The shipped model's folder, then the recipe's other pretraining seeds under ``folder``."""
    return [FOLDER, *_model_folders(Path(folder), "pretraining seeds")]


def momentum_folders(folder: Path | str = MOMENTUM_FOLDER) -> list[Path]:
    """Every model of the momentum study under ``folder`` (momentum 0 included)."""
    return _model_folders(Path(folder), "momentum study")


#: The kinds of row of the second model's pretraining text (:func:`.world.pretraining_batch`),
#: as the recipe's shares that draw one kind alone.
ROW_KINDS = {
    "catalogue": {"p_catalogue": 1.0, "p_repeat": 0.0},
    "document": {"p_catalogue": 0.0, "p_repeat": 0.0},
    "repeat": {"p_catalogue": 0.0, "p_repeat": 1.0},
}


def held_out_text(n: int, seed: int, kind: str | None = None) -> torch.Tensor:
    """``n`` rows of the second model's pretraining text (the shipped recipe's mix of catalogues,
    documents and repeated text, 256 tokens each; or rows of one ``kind`` of :data:`ROW_KINDS`
    alone), drawn from ``random.Random(seed)``, a stream that no pretraining reads (theirs are
    the seeds 0, 1, 2...: pass a chapter stream's seed)."""
    if kind is not None and kind not in ROW_KINDS:
        raise ValueError(f"kind must be one of {sorted(ROW_KINDS)} or None, got {kind!r}")
    shares = ROW_KINDS[kind] if kind else {}
    return replace(InferencePretrainConfig(), batch=n, **shares).draw(random.Random(seed))


def loss_fall(steps: list[int], losses: list[float], level: float = 1.8, window: int = 5) -> int | None:
    """The first logged step at which the training loss, averaged over ``window`` logged values
    ending there, is below ``level`` nats (None if never): for the second model's recipe, whose
    loss sits near 2.0 nats until an induction head forms and then falls to about 1.5, the step
    of that fall."""
    for i in range(window - 1, len(losses)):
        if np.mean(losses[i - window + 1 : i + 1]) < level:
            return int(steps[i])
    return None


def perplexity_by_kind(folders: list[Path], n: int, seed: int) -> list[dict[str, Any]]:
    """Each model of ``folders`` on ``n`` held-out rows of each kind of :data:`ROW_KINDS` (drawn
    from ``seed``; the same rows for every model): one dict per model with its ``eta``, ``seed``,
    the perplexity of each kind, ``copy``, the perplexity of the repeated rows' second half,
    text the row has already shown, which a model that copies (an induction head) predicts
    almost surely, and ``fall``, the step its training loss fell (:func:`loss_fall`)."""
    texts = {kind: held_out_text(n, seed, kind) for kind in ROW_KINDS}
    repeat = texts["repeat"]
    half = (repeat.shape[1] - 1) // 2
    out = []
    for f in folders:
        m, rec = load_shipped(f)
        row: dict[str, Any] = {
            "eta": float(rec["model"]["momentum"]),
            "seed": int(rec["pretrain"]["seed"]),
            "fall": loss_fall(rec["step"], rec["loss"]),
        }
        with torch.no_grad():
            logits = {kind: m(text[:, :-1]) for kind, text in texts.items()}
        for kind, text in texts.items():
            length = text.shape[1] - 1
            row[kind] = perplexity_by_length(m, text, (length,), logits[kind])[length]
        late = logits["repeat"][:, half:]  # repeated rows are full: no padding to weigh out
        row["copy"] = float(F.cross_entropy(late.reshape(-1, late.shape[-1]), repeat[:, half + 1 :].reshape(-1)).exp())
        out.append(row)
    return out


def momentum_study(
    folders: list[Path],
    held_out: torch.Tensor,
    tests: Mapping[str, tuple[Dataset, Dataset]],
    k: int,
    demo_generator: Callable[[], torch.Generator],
) -> list[dict[str, Any]]:
    """Read each model of ``folders``: its perplexity on the ``held_out`` text, and per task of
    ``tests`` (``{task: (demonstration pool, test set)}``) its zero-shot and its ICL accuracy in
    the evaluation template, with ``k`` demonstrations drawn from one fresh ``demo_generator()``
    per model (so every model reads the same prompts). One dict per model: ``eta``, ``seed``,
    ``ppl``, ``zs``, ``icl`` and ``gain`` (ICL - zero-shot; means over the tasks), ``per_task`` and
    the record's ``evals``."""
    rows = []
    for f in folders:
        m, rec = load_shipped(f)
        ppl = perplexity_by_length(m, held_out, (held_out.shape[1] - 1,))
        gdemo = demo_generator()
        per_task = {}
        for name, (pool, test) in tests.items():
            demos = probe.demonstrations(pool, k, gdemo)
            per_task[name] = {
                "zs": probe.accuracy(probe.predict(m, test, codec=world.WORLD), test),
                "icl": probe.accuracy(probe.predict(m, test, demos, codec=world.WORLD), test),
            }
        rows.append(
            {
                "eta": float(rec["model"]["momentum"]),
                "seed": int(rec["pretrain"]["seed"]),
                "ppl": float(next(iter(ppl.values()))),
                "zs": float(np.mean([v["zs"] for v in per_task.values()])),
                "icl": float(np.mean([v["icl"] for v in per_task.values()])),
                "gain": float(np.mean([v["icl"] - v["zs"] for v in per_task.values()])),
                "per_task": per_task,
                "evals": rec["evals"],
            }
        )
    return rows


def momentum_contrast(
    rows: list[Mapping[str, Any]], key: str, eta: float, sign: int = 1, level: float = 0.95
) -> dict[str, Any]:
    """Momentum ``eta`` against none on ``key`` of :func:`momentum_study`'s ``rows``, in the
    direction ``sign`` (+1: up, -1: down).

    * ``diff`` and ``interval``: the difference of the means over seeds (``eta`` minus 0) and its
      ``level`` interval (Welch); ``base``, the mean without momentum;
    * ``passes``: the interval excludes 0 on the ``sign`` side, *and* no other way of splitting the
      pooled models into arms of the same sizes goes as far in that direction (a permutation test
      at ``1 / splits``: with three seeds an arm, a Welch interval alone can exclude 0 by luck,
      when three values happen to lie close together);
    * the null, the arms' labels shuffled among the models (every split, the original included,
      as chapter 1's split control): the median difference (``null_diff``), the 5-95% range of
      the differences (``null_interval``), and whether the split at the median passes the rule
      (``null_passes``);
    * the seed effect: of the splits that mix both settings in each arm, the one that goes
      furthest in the direction ``sign`` (``far_diff``, ``far_interval``, ``far_passes``; it can
      pass only where the original does not, when the seeds differ by more than the settings)."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    a = np.array([r[key] for r in rows if r["eta"] == eta], float)
    b = np.array([r[key] for r in rows if r["eta"] == 0.0], float)
    pooled = np.concatenate([a, b])
    masks = relabellings(len(a), len(b))
    splits = [welch_interval(pooled[m], pooled[~m], level) for m in masks]  # the original first
    reach = np.array([sign * d for d, _, _ in splits])

    def passes(i: int) -> bool:
        _, lo_, hi_ = splits[i]
        beyond = lo_ > 0 if sign > 0 else hi_ < 0
        return bool(beyond and reach[i] > np.delete(reach, i).max())

    mixed = [i for i, m in enumerate(masks) if 0 < m[: len(a)].sum() < len(a)]
    if not mixed:
        raise ValueError("need two or more seeds per arm for a relabelling that mixes them")
    far = max(mixed, key=lambda i: reach[i])
    median = int(np.argsort(reach, kind="stable")[(len(reach) - 1) // 2])
    diffs = np.array([d for d, _, _ in splits])
    return {
        "diff": splits[0][0],
        "interval": splits[0][1:],
        "base": float(b.mean()),
        "passes": passes(0),
        "seeds": (len(a), len(b)),
        "splits": len(splits),
        "null_diff": float(np.median(diffs)),
        "null_interval": tuple(float(q) for q in np.quantile(diffs, [0.05, 0.95])),
        "null_passes": passes(median),
        "far_diff": splits[far][0],
        "far_interval": splits[far][1:],
        "far_passes": passes(far),
    }
