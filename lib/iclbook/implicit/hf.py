"""The chapter's probes on a Hugging Face model and the paper's six real data sets.

:mod:`.probe` finds attention layers by their children ``q_proj``, ``k_proj``, ``v_proj`` and
``out_proj`` and finetunes the parameters whose names contain ``k_proj`` or ``v_proj``;
:mod:`.families` gives GPT-2, OPT, XGLM (the Hugging Face class of the fairseq dense models that
the paper used) and GPT-NeoX/Pythia those children (fused projections split, NeoX's rotation moved
into them), float32 master K/V weights and loss scaling in half precision, and a cached
demonstration prefix; :mod:`.real` runs the chapter's controls on such a model, estimates the
cost first and writes ledger rows. This module adds what a real run needs besides the model:

* :data:`SOURCES` and :func:`splits`: the six data sets through ``datasets`` (field names, label
  order, the split the paper reported), cut into a demonstration pool and a dev split (both from
  the training split) and a test split (the reported split, shuffled with seed 1 and capped, as
  the paper's code did);
* :func:`run`, also ``python -m iclbook.implicit.hf``: the chapter's protocol
  (:func:`.experiment.run_task`, :func:`.experiment.statistics`) on a pretrained model, prompts
  built as text and cut by its tokenizer (:class:`.codec.TextCodec`);
* :func:`tiny_opt` and :func:`word_tokenizer`: a randomly initialised OPT (:func:`.families.tiny`
  builds one of each family) and a word-level ``transformers`` tokenizer over the chapter's
  vocabulary, built offline, so that CI exercises all of the above without a download.

``transformers``, ``tokenizers`` and ``datasets`` are imported lazily: the rest of the library
does not need them (``pip install "iclbook[hf]"`` brings them).

    python -m iclbook.implicit.hf --model facebook/opt-125m --profile colab --dtype float16 --out real.json

The JSON is rewritten as each task finishes, and a rerun with the same ``--out``, model, profile,
seed and dtype resumes after the finished tasks. Before it starts it prints the time and memory
estimate of :func:`.real.estimate` (an assumed T4 throughput, not a measurement) and, while it
runs, a progress bar in forward tokens. Memory: three copies of the weights at once (the model,
the learning-rate search's copy, the finetuned copy), plus host memory for one task's records
(score rows over the whole context are kept only for the Kendall statistic's prompts);
:func:`memory_estimate` prints the figures for the model at hand.

Templates: the prompts are the paper's Table 8 templates (AGNews ``News: ... Type:``), not the
official code's, whose AGNews template differs (``Classify the news articles into the categories of
World, Sports, Business, and Technology. Article: ... Answer:``); we follow
the paper because its tables are what we compare with.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.std import tqdm

from iclbook import runtime
from iclbook.implicit import experiment, families
from iclbook.implicit.codec import TextCodec
from iclbook.implicit.config import LR_GRID, Config
from iclbook.implicit.data import BOS, PAD, SEP, TASK_NAMES, TOKEN_ID, VOCAB, Dataset, get_task, make_dataset

# ---------------------------------------------------------------------------------------------
# The real data sets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one task's data lives on the Hugging Face Hub and how a record becomes an input.

    ``label_text``: where the data set carries a ``label_text`` field (the SetFit copies), the
    text expected for each class index (lower case; compared ignoring case and surrounding space),
    checked on every record so that a changed label order is an error rather than a silently
    wrong verbalizer."""

    path: str
    config: str | None
    train: str
    eval: str  # the split the paper reported (its "validation" set)
    fields: tuple[str, ...]
    label_text: tuple[str, ...] | None = None
    revision: str | None = None

    def render(self, record: Mapping) -> str:
        missing = [f for f in self.fields if f not in record]
        if missing:
            raise ValueError(f"{self.path} record lacks field(s) {missing}; it has {sorted(record)}")
        if self.fields == ("premise", "hypothesis"):  # CB, with the paper's template
            return f"{record['premise'].strip()} Question: {record['hypothesis'].strip()}."
        return str(record[self.fields[0]]).strip()


# Splits reported in the paper's Table 1: SST-2 872, SST-5 1101, MR 1066, Subj 2000, AGNews 7600
# (its code evaluates 2000 of them), CB 56. The loader-script datasets (GLUE, SuperGLUE) are
# named by their Parquet copies, which recent ``datasets`` releases need.
SOURCES: dict[str, Source] = {
    "sst2": Source("nyu-mll/glue", "sst2", "train", "validation", ("sentence",)),
    "sst5": Source(
        "SetFit/sst5",
        None,
        "train",
        "validation",
        ("text",),
        ("very negative", "negative", "neutral", "positive", "very positive"),
    ),
    "mr": Source("cornell-movie-review-data/rotten_tomatoes", None, "train", "validation", ("text",)),
    "subj": Source("SetFit/subj", None, "train", "test", ("text",), ("objective", "subjective")),
    "agnews": Source("fancyzhx/ag_news", None, "train", "test", ("text",)),
    "cb": Source("aps/super_glue", "cb", "train", "validation", ("premise", "hypothesis")),
}


def from_records(name: str, records: Sequence[Mapping]) -> Dataset:
    """A :class:`.data.Dataset` of strings from raw records of task ``name``'s data set. The
    data sets' label indices already follow the order of the paper's label words (SST-5: very
    negative ... very positive = terrible ... great; AGNews: World, Sports, Business, Sci/Tech;
    CB: entailment, contradiction, neutral = True, False, Neither)."""
    task = get_task(name)
    src = SOURCES[name]
    inputs, classes = [], []
    for r in records:
        y = int(r["label"])
        if not 0 <= y < task.n_classes:
            raise ValueError(f"{name}: label {y} outside 0..{task.n_classes - 1} (an unlabelled split?)")
        if (
            src.label_text is not None
            and "label_text" in r
            and str(r["label_text"]).strip().lower() != src.label_text[y]
        ):
            raise ValueError(f"{name}: label {y} is {r['label_text']!r} in the data, expected {src.label_text[y]!r}")
        inputs.append(src.render(r))
        classes.append(y)
    if not inputs:
        raise ValueError(f"{name}: no records")
    return Dataset(task, inputs, torch.tensor(classes, dtype=torch.long))


#: The revision where the Hugging Face Hub keeps its Parquet conversion of a data set: what
#: ``datasets >= 4`` (which runs no loading script) reads for a data set still published as a
#: script (SuperGLUE's CB was one).
PARQUET_REVISION = "refs/convert/parquet"


def load_split(src: Source, split: str):
    """One split through ``datasets`` (needs the network the first time, then its cache). A data
    set that ``datasets`` cannot load as published (a loading script, refused by ``datasets >=
    4``) is read from its Parquet conversion (:data:`PARQUET_REVISION`); if that fails too, the
    error says what was tried and what to check."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise ImportError(
            "the real data sets need the `datasets` package: pip install 'datasets>=4' (or pip install \"iclbook[hf]\")"
        ) from err
    where = f"{src.path}" + (f", config {src.config!r}" if src.config else "") + f", split {split!r}"
    try:
        return load_dataset(src.path, src.config, split=split, revision=src.revision)
    except Exception as first:  # noqa: BLE001 (any failure: try the Parquet conversion, then explain)
        if src.revision == PARQUET_REVISION:
            raise RuntimeError(f"cannot load {where} from the Hugging Face Hub: {first}") from first
        try:
            return load_dataset(src.path, src.config, split=split, revision=PARQUET_REVISION)
        except Exception as second:  # noqa: BLE001
            raise RuntimeError(
                f"cannot load {where} from the Hugging Face Hub, neither as published ({type(first).__name__}: "
                f"{first}) nor from its Parquet conversion, revision {PARQUET_REVISION!r} "
                f"({type(second).__name__}: {second}). Check the network (Colab: Runtime > Change runtime "
                "type needs none; a proxy or an offline HF_HUB_OFFLINE=1 blocks it) and that "
                f"https://huggingface.co/datasets/{src.path} still exists."
            ) from second


def splits(
    name: str, cfg: Config, seed: int, *, loader: Callable[[Source, str], Sequence[Mapping]] = load_split
) -> tuple[Dataset, Dataset, Dataset]:
    """``(pool, dev, test)`` of a real task, the counterpart of :func:`.experiment.splits`.

    The training split is shuffled with ``seed``: its first ``cfg.pool`` records are the
    demonstration pool, the next ``cfg.n_dev`` the dev split (the paper had none: it selected
    on the split it reported). The reported split is shuffled with seed 1 and capped at
    ``cfg.n_test``, as the paper's code did."""
    src = SOURCES[get_task(name).name]
    train, reported = loader(src, src.train), loader(src, src.eval)
    need = cfg.pool + cfg.n_dev
    if len(train) < need:
        raise ValueError(f"{name}: pool {cfg.pool} + dev {cfg.n_dev} > {len(train)} training records")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    test_order = torch.randperm(len(reported), generator=torch.Generator().manual_seed(1)).tolist()
    return (
        from_records(name, [train[i] for i in order[: cfg.pool]]),
        from_records(name, [train[i] for i in order[cfg.pool : need]]),
        from_records(name, [reported[i] for i in test_order[: cfg.n_test]]),
    )


def synthetic_loader(src: Source, split: str, n: int = 400) -> list[dict]:
    """A stand-in for :func:`load_split` that needs no network: ``n`` examples of the synthetic
    task that mirrors ``src``, as records with ``src``'s field names (CB's input cut into premise
    and hypothesis). With :func:`word_tokenizer` it runs :func:`run` offline."""
    name = next(k for k, v in SOURCES.items() if v == src)
    role = "train" if split == src.train else "test"
    data = make_dataset(name, n, seed=0, split=role)
    records = []
    for x, y in zip(data.inputs, data.classes.tolist()):
        if name == "cb":
            q = x.index("Question:")
            r = {"premise": " ".join(x[:q]), "hypothesis": " ".join(x[q + 1 : -1])}
        else:
            r = {src.fields[0]: " ".join(x)}
        r["label"] = y
        if src.label_text is not None:
            r["label_text"] = src.label_text[y]
        records.append(r)
    return records


def as_text(data: Dataset) -> Dataset:
    """A synthetic data set with each input's words joined into one string (what a
    :class:`.codec.TextCodec` reads)."""
    return Dataset(data.task, [" ".join(x) for x in data.inputs], data.classes, data.cues)


# Sizes for a real model. ``k`` = 32 as the paper (its contexts were cut at 2048 tokens, which
# left 19 demonstrations for CB and 22 for AGNews); pool + dev must fit CB's 250 training records.
CONFIGS = {
    "smoke": Config(
        n_test=50, n_dev=20, k=8, pool=32, demo_seeds=(1,), lr_grid=LR_GRID[::6], eval_seeds=1, kendall_examples=20
    ),
    "book": Config(n_test=500, n_dev=100, k=32, pool=128, demo_seeds=(1, 2, 3), lr_grid=LR_GRID[::2], eval_seeds=1),
    "paper": Config(n_test=2000, n_dev=120, k=32, pool=128, eval_seeds=1),
    # the paper's k and contexts, half its test examples, four demonstration seeds, every other
    # learning rate, selection on dev only: aimed at ~20 min per task for a 125M-350M model on a
    # T4 (the estimate, iclbook.implicit.real.estimate, prints its basis)
    "colab": Config(
        n_test=1000,
        n_dev=120,
        k=32,
        pool=128,
        demo_seeds=(1, 2, 3, 4),
        lr_grid=LR_GRID[::2],
        eval_seeds=1,
        control_examples=300,
    ),
}

#: Whether a profile also selects the learning rate on the reported split, as the paper did
#: (36 finetunings x 2,000 zero-shot prompts more at the paper profile).
SELECT_ON_TEST = {"smoke": True, "book": True, "paper": True, "colab": False}

# ---------------------------------------------------------------------------------------------
# Models and tokenizers
# ---------------------------------------------------------------------------------------------


def _quiet_import() -> None:
    """``transformers`` imports ``tqdm.auto``, which warns in a notebook without ipywidgets;
    import it first with that one warning silenced."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401


def tiny_opt(seed: int = 0, layers: int = 2, d_model: int = 64, heads: int = 4):
    """A randomly initialised ``OPTForCausalLM`` over this chapter's vocabulary (pre-LN, eager
    attention so that its attention probabilities can be read back), built offline."""
    _quiet_import()
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=len(VOCAB),
        hidden_size=d_model,
        num_hidden_layers=layers,
        ffn_dim=4 * d_model,
        num_attention_heads=heads,
        max_position_embeddings=256,
        word_embed_proj_dim=d_model,
        do_layer_norm_before=True,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=TOKEN_ID[PAD],
        bos_token_id=TOKEN_ID[BOS],
        eos_token_id=TOKEN_ID[SEP],
    )
    config._attn_implementation = "eager"
    with runtime.seeded(seed):  # without touching the caller's stream
        return OPTForCausalLM(config).eval()


def word_tokenizer():
    """A ``transformers`` fast tokenizer whose vocabulary is this chapter's word list (split on
    white space and full stops; an unknown word is an error): with it, a :class:`.codec.TextCodec` on
    :func:`as_text` data gives exactly the token ids of :data:`.codec.WORDS`."""
    _quiet_import()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=dict(TOKEN_ID), unk_token="<unk>"))
    # white space, and a full stop cut off the word it ends (CB's "{hypothesis}.")
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(".", behavior="isolated")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=SEP, pad_token=PAD)


def pretrained(name: str = "facebook/opt-125m", device: str | None = None, dtype: torch.dtype = torch.float32):
    """A pretrained causal LM of a family in :data:`.families.FAMILIES` (GPT-2, OPT, XGLM, e.g.
    ``KoboldAI/fairseq-dense-1.3B``, the paper's 1.3B model in the XGLM class, GPT-NeoX/Pythia),
    adapted for the probes (:func:`.families.adapt`: separate projections, float32 master K/V
    weights in half precision), on ``device``, and its tokenizer. Needs the network once (then
    the Hugging Face cache); for Colab or a GPU machine, never CI. A download that fails says
    what is missing."""
    _quiet_import()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = AutoConfig.from_pretrained(name).model_type
    except OSError as err:
        raise OSError(
            f"cannot fetch the model {name!r} (no network, or no such model on the Hugging Face Hub): {err}"
        ) from err
    families.check_type(kind)  # before a download of weights the probes cannot read
    # loaded in float32 so that the float32 master K/V weights are the checkpoint's, then cast
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation="eager")
    adapted = families.adapt(model, dtype)
    return adapted.to(device).eval(), AutoTokenizer.from_pretrained(name)


def as_probed(model):
    """``model`` as the probes read it: a Hugging Face model is adapted on a copy
    (:func:`.families.adapted_copy`); our TinyLM and an adapted model are returned as they are."""
    if isinstance(model, families.Adapted) or not hasattr(getattr(model, "config", None), "model_type"):
        return model
    return families.adapted_copy(model)


def context_length(model) -> int:
    """The longest prompt: the paper's 2048 tokens, or less where the model's positions end."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(2048, int(limit)) if limit else 2048


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------


def run(
    model,
    tokenizer,
    names: Sequence[str] = TASK_NAMES,
    *,
    cfg: Config,
    seed: int = 0,
    loader: Callable[[Source, str], Sequence[Mapping]] = load_split,
    max_len: int | None = None,
    progress: bool = True,
    select_on_test: bool = True,
    done: Mapping[str, dict] | None = None,
    on_task: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """The chapter's protocol on ``model`` for each task of ``names``: accuracies (Z, I, F,
    nonce, F with the learning rate chosen on test), the chosen demonstration seed and learning
    rate, how many demonstrations each prompt kept, and the four statistics with their controls.
    A plain dict, ready for JSON.

    Tasks already in ``done`` are kept as they are and not run again; ``on_task(name, result)``
    is called as each task finishes (``main`` writes the JSON there, so a crash loses at most the
    task in progress)."""
    codec = TextCodec(tokenizer)
    model = as_probed(model)
    max_len = max_len or context_length(model)
    out = dict(done or {})
    todo = [n for n in names if n not in out]
    from iclbook.implicit import real  # noqa: PLC0415 (real imports this module)

    show = progress and runtime.progress_enabled()
    vocab = getattr(getattr(model, "config", None), "vocab_size", 50_272)
    for name in tqdm(todo, desc="tasks", file=sys.stderr, disable=not show):
        t0 = time.perf_counter()
        data = splits(name, cfg, seed, loader=loader)
        total = real.task_tokens(name, cfg, max_len, select_on_test, controls=False, vocab=vocab)[0]
        with real.Meter(total, name, enabled=show and isinstance(model, families.Adapted)):
            r = experiment.run_task(
                model, name, cfg, seed, data=data, codec=codec, max_len=max_len, select_on_test=select_on_test
            )
        stats = experiment.statistics(r, torch.Generator().manual_seed(seed), cfg.kendall_examples)
        stats.pop("per_example")
        kept = [len(s) for s in r.spans]
        out[name] = {
            "acc": r.acc,
            "demo_seed": r.demo_seed,
            "lr": r.lr,
            "lr_on_test": r.lr_on_test,
            "demonstrations": len(r.demos),
            "demonstrations_in_context": {"min": min(kept), "max": max(kept), "mean": sum(kept) / len(kept)},
            "stats": stats,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if on_task is not None:
            on_task(name, out[name])
    return {n: out[n] for n in names if n in out}


def _strict(obj):
    """``obj`` with NaN and infinities as ``null`` (strict JSON; Rec2FTP is NaN when FT fixes
    no example)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def memory_estimate(
    n_params: int, dtype: torch.dtype, layers: int, heads: int, cfg: Config, context: int = 2048
) -> dict[str, float]:
    """Rough peak memory of :func:`run` in GiB: ``weights``, the model plus the finetuned copy and
    the copy being tuned during the learning-rate search (three copies; SGD keeps no optimiser
    state); ``records``, the host memory of one task's records (float32 score rows: whole rows
    for ``cfg.kendall_examples`` prompts, the query's ~64 positions for the others)."""
    size = torch.finfo(dtype).bits // 8
    weights = 3 * n_params * size / 2**30
    full = cfg.kendall_examples * layers * heads * context * 4
    tail = 3 * cfg.n_test * layers * heads * 64 * 4
    return {"weights": round(weights, 1), "records": round((full + tail) / 2**30, 1)}


def load_done(path: Path, header: Mapping) -> dict[str, dict]:
    """The finished tasks of an earlier run written to ``path`` with the same model, profile and
    seed (nothing if the file is absent); a file from another run is an error, not overwritten."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    clash = {k: (old.get(k), v) for k, v in header.items() if old.get(k) != v}
    if clash:
        raise SystemExit(f"{path} holds another run ({clash}): pass --fresh to overwrite it or choose another --out")
    return dict(old.get("tasks", {}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run chapter 2's protocol on a pretrained model and the six real data sets."
    )
    parser.add_argument("--model", default="facebook/opt-125m")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.add_argument("--profile", default="paper", choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="weights' dtype (the paper finetuned in fp16); float32 by default",
    )
    parser.add_argument(
        "--max-len", type=int, default=None, help="longest prompt in tokens (default: 2048, or the model's limit)"
    )
    parser.add_argument("--out", type=Path, default=Path("real-model.json"))
    parser.add_argument(
        "--fresh", action="store_true", help="ignore the finished tasks in --out instead of resuming from them"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="offline: a random tiny model (of --family), the word tokenizer and the synthetic "
        "stand-ins of the data sets (checks the pipeline, says nothing of ICL)",
    )
    parser.add_argument("--family", default="opt", choices=sorted(families.FAMILIES), help="the dry run's family")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    if args.dry_run:
        model = families.adapt(families.tiny(args.family, args.seed), dtype)
        tokenizer, loader = word_tokenizer(), synthetic_loader
        args.model = f"tiny random {args.family} (dry run)"
    else:
        (model, tokenizer), loader = pretrained(args.model, args.device, dtype), load_split
    cfg = CONFIGS[args.profile]
    header = {"model": args.model, "profile": args.profile, "seed": args.seed, "dtype": args.dtype}
    done = {} if args.fresh else load_done(args.out, header)
    conf = getattr(model, "config", None)
    if conf is not None and hasattr(conf, "num_hidden_layers"):
        mem = memory_estimate(
            sum(p.numel() for p in model.parameters()),
            dtype,
            conf.num_hidden_layers,
            conf.num_attention_heads,
            cfg,
            args.max_len or context_length(model),
        )
        print(
            f"memory, roughly: {mem['weights']} GiB for three copies of the weights, "
            f"{mem['records']} GiB of host memory for one task's records",
            file=sys.stderr,
        )
        from iclbook.implicit import real  # noqa: PLC0415 (real imports this module)

        todo = [t for t in args.tasks if t not in done]
        est = real.estimate(
            **real.model_sizes(model), names=todo or args.tasks, cfg=cfg, dtype=dtype,
            max_len=args.max_len or context_length(model), select_on_test=SELECT_ON_TEST[args.profile],
            controls=False,
        )  # fmt: skip
        print("estimate:", real.describe(est, args.model, todo or args.tasks), file=sys.stderr)
    if done:
        print(f"resuming: {', '.join(done)} already in {args.out}", file=sys.stderr)
    results = dict(done)

    def write(name: str, result: dict) -> None:
        results[name] = result
        record = {**header, "torch": torch.__version__, "tasks": results}
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(_strict(record), indent=1))
        tmp.replace(args.out)  # never a half-written file

    result = run(
        model,
        tokenizer,
        args.tasks,
        cfg=cfg,
        seed=args.seed,
        loader=loader,
        max_len=args.max_len,
        select_on_test=SELECT_ON_TEST[args.profile],
        done=done,
        on_task=write,
    )
    for name, r in result.items():
        a, s = r["acc"], r["stats"]
        print(
            f"{name:7s} ZSL {a['Z']:.3f} ICL {a['I']:.3f} FT {a['F']:.3f} nonce {a['nonce']:.3f} | "
            f"Rec2FTP {s['rec2ftp']:.1f} (null {s['rec2ftp_null']:.1f}) SimAOU {s['simaou']:.3f} "
            f"SimAM {s['simam_before']:.3f}->{s['simam_after']:.3f} Kendall {s['kendall']:.3f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
