"""Chapter 2's second model: the tiny GPT pretrained on the inference world (:mod:`.world`), its
data splits, and the gates it must pass before any of the paper's statistics is read on it.

The protocol is the first model's (:func:`.experiment.run_task`), given this world's splits and
codec::

    model, record = load()
    run = experiment.run_task(model, "sst2", cfg, seed, data=splits("sst2", cfg, seed), codec=world.WORLD)
    gate_rows({"sst2": run})          # chance, zero-shot, ICL and the two readers per task
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iclbook.implicit import readers, world
from iclbook.implicit.data import Dataset
from iclbook.implicit.model import TinyLM
from iclbook.implicit.pretrain import WEIGHTS, load_shipped

#: Where the second model ships (``python -m iclbook.implicit.retrain --world inference``).
FOLDER = WEIGHTS / "inference"


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
