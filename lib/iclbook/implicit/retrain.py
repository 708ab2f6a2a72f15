"""Pretrain the chapter's tiny GPT and write the shipped checkpoint (package data).

    python -m iclbook.implicit.retrain            # the recipe of pretrain.PretrainConfig()
    python -m iclbook.implicit.retrain --steps 200 --out /tmp/lm   # a quick try
    python -m iclbook.implicit.retrain --world inference   # the second model (pretrain.InferencePretrainConfig)
    python -m iclbook.implicit.retrain --world inference --set p_catalogue=0.7 --out /tmp/try  # a trial

Writes ``<out>/tinylm.pt`` (a ``state_dict`` in float32, loaded with ``weights_only=True``) and
``<out>/tinylm.json`` (the configs, the loss curve, in-training evaluations, the seconds taken, the
torch version and the SHA-256 of the ``.pt`` file). Checkpoints are written every
``--save-every`` steps, so an interrupted run loses little.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from iclbook.implicit import data, pretrain
from iclbook.implicit.model import LMConfig, TinyLM
from iclbook.implicit.pretrain import label_accuracy_by_context


def save(model: TinyLM, history: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    pt = out / "tinylm.pt"
    torch.save({k: v.detach().cpu().float() for k, v in model.state_dict().items()}, pt)
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()
    record = dict(history, sha256=digest, torch=torch.__version__)
    (out / "tinylm.json").write_text(json.dumps(record, indent=1))
    return digest


def world_evaluation(test_n: int = 100, k: int = 16, names: tuple[str, ...] = data.TASK_NAMES):
    """The inference model's in-training reading: zero-shot and ICL accuracy (``k``
    demonstrations) of each task on ``test_n`` test examples of evaluation seed 10**6 (a seed
    the chapter never reads), in the evaluation templates that pretraining never shows (keys
    ``zs_<task>``, ``icl_<task>``) and in one of pretraining's own formats (``own_zs_<task>``,
    ``own_icl_<task>``, :data:`.world.OWN_FORMAT`): the difference is what a new template costs."""
    from iclbook.implicit import probe, world  # noqa: PLC0415

    sets = {}
    for n in names:
        pool = world.make_dataset(n, 64, 10**6, split="train")
        test = world.make_dataset(n, test_n, 10**6, split="test")
        own = dataclasses.replace(test, task=dataclasses.replace(test.task, **world.OWN_FORMAT))
        sets[n] = (probe.demonstrations(pool, k, torch.Generator().manual_seed(1)), {"": test, "own_": own})

    def evaluate(m: TinyLM) -> dict:
        out = {}
        for fmt in ("", "own_"):
            for n, (demos, tests) in sets.items():
                test = tests[fmt]
                out[f"{fmt}zs_{n}"] = round(probe.accuracy(probe.predict(m, test, [], codec=world.WORLD), test), 4)
                out[f"{fmt}icl_{n}"] = round(probe.accuracy(probe.predict(m, test, demos, codec=world.WORLD), test), 4)
        return out

    return evaluate


#: The second model's network (the inference world): sinusoidal positions instead of ALiBi,
#: three layers, and token mixing 10 tokens wide (the first model's is 3), so that a position
#: can read a whole input before it (an input has about 9 words).
INFERENCE_MODEL = {"positions": "sinusoidal", "layers": 3, "mix": 10}


def _overrides(recipe, pairs: list[str]) -> dict:
    """``FIELD=VALUE`` strings -> fields of ``recipe`` (a dataclass: a recipe or a network) with
    values of the field's own type."""
    fields = {f.name: type(getattr(recipe, f.name)) for f in dataclasses.fields(recipe)}
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set takes FIELD=VALUE with FIELD one of {sorted(fields)}, got {pair!r}")
        out[name] = fields[name](value)
    return out


def _network(net: LMConfig, pairs: list[str]) -> LMConfig:
    """``net`` with the ``FIELD=VALUE`` overrides of ``--model`` (a trial of another size)."""
    return dataclasses.replace(net, **_overrides(net, pairs)) if pairs else net


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=("lookup", "inference"), default="lookup")
    parser.add_argument("--steps", type=int, default=None, help="default: the world's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped checkpoint's folder")
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override fields of the recipe (a trial)"
    )
    parser.add_argument(
        "--model", nargs="*", default=[], metavar="FIELD=VALUE", help="override fields of the network (a trial)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.world == "lookup":
        default: pretrain.PretrainConfig | pretrain.InferencePretrainConfig = pretrain.PretrainConfig()
        model = TinyLM(_network(LMConfig(momentum=args.momentum), args.model))
        # p_plain=0.1: the probe batch the shipped checkpoints were evaluated on (labels in 90% of rows)
        probe_batch = data.pretraining_batch(128, default.seq_len, torch.Generator().manual_seed(10**6), p_plain=0.1)

        def evaluate(m: TinyLM) -> dict:
            return label_accuracy_by_context(m, probe_batch)

        out, every = pretrain.WEIGHTS, 1000
    else:
        from iclbook.implicit import world  # noqa: PLC0415

        default = pretrain.InferencePretrainConfig()
        net = LMConfig(vocab=len(world.VOCAB), momentum=args.momentum, **INFERENCE_MODEL)
        model = TinyLM(_network(net, args.model))
        evaluate = world_evaluation()
        out, every = pretrain.WEIGHTS / "inference", 500
    cfg = dataclasses.replace(
        default, steps=args.steps or default.steps, seed=args.seed, **_overrides(default, args.set)
    )
    out = args.out or out
    every = args.save_every or every
    history = pretrain.pretrain(model, cfg, evaluate=evaluate, eval_every=every, on_eval=lambda m, h: save(m, h, out))
    print("sha256", save(model, history, out))


if __name__ == "__main__":
    main()
