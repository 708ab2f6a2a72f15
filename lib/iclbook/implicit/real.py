"""Chapter 2's claims and controls on a real model: the same protocol, statistics and controls as
the tiny model's (:mod:`.experiment`, :mod:`.metrics`), on text through :mod:`.hf`, with a time
and memory estimate first, and the result written as ledger rows.

:func:`study` runs, per task: the protocol with the shuffled-label nulls of ICL and FT
(:func:`.experiment.run_task`, ``shuffled=True``); the four statistics with their baselines
(:func:`.experiment.statistics`); the critics' untrained models, two random initialisations of
the model's own architecture (:func:`untrained_like`, :func:`.experiment.rerun`); and the
off-ceiling protocol with two demonstrations (:func:`short_context`: Rec2FTP with its
difficulty-matched null, and the order flips of ICL, sequential SGD and full-batch GD).

:func:`record` turns a study into ledger rows, keys prefixed ``"Real model: "``: the chapter's
rows on the same statistics, with the same thresholds and nulls (the chapter records its tiny
model's rows in its own cells; these mirror them for a model of any size). A row whose null
passes its criterion cannot tell the model from its null: it is recorded inconclusive with that
reason (the criteria were fixed before any real run; a run cannot be tuned against).

:func:`estimate` says what a run costs before it starts: forward tokens counted from the
profile's sizes and the tasks' typical prompt lengths, turned into FLOPs (``2 x parameters`` per
token plus attention over the context) and seconds at an *assumed* throughput per GPU
(:data:`THROUGHPUT`; not measured: no T4 was available when this was written), and the peak GPU
memory from the model's sizes.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.std import tqdm

from iclbook import ledger, runtime
from iclbook.implicit import experiment, families, hf, metrics, probe
from iclbook.implicit.codec import TextCodec
from iclbook.implicit.config import Config
from iclbook.implicit.data import TASKS

# ---------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------

#: Typical tokens of one filled template (input and label) per task with GPT-2's BPE (the
#: tokenizer of GPT-2, OPT and the fairseq dense models), from the data sets' mean input lengths
#: (SST-2 ~20 words, SST-5 and MR ~20, Subj ~25, AGNews ~40, CB premise + hypothesis ~60) plus
#: the template words: a basis for the estimate, not a measurement.
TYPICAL_TOKENS = {"sst2": 28, "sst5": 33, "mr": 30, "subj": 34, "agnews": 52, "cb": 80}

#: Assumed sustained throughput in FLOP/s of Hugging Face eager attention on one GPU, by dtype:
#: about 15% of a T4's tensor-core peak in float16 (65 TFLOP/s), 37% of its float32 peak
#: (8.1 TFLOP/s). **Not measured**: no T4 was lent while this was written; a reader's first task
#: prints its real seconds beside the estimate.
THROUGHPUT = {"T4": {torch.float16: 10e12, torch.bfloat16: 2e12, torch.float32: 3e12}}

#: Assumed fixed cost of one forward or backward call (kernel launches of a 12-24 layer model).
CALL_SECONDS = 0.012


def task_tokens(
    name: str, cfg: Config, max_len: int, select_on_test: bool, controls: bool = True, vocab: int = 50_272
) -> tuple[float, float, float]:
    """``(tokens, calls, context)``: forward tokens (a backward pass counted as two forwards),
    forward calls and the mean context length of one task of ``cfg`` (``controls``: with the
    random models and the two-demonstration protocol of :func:`study`)."""
    q = TYPICAL_TOKENS[name]
    prefix = min(cfg.k * (q + 1), max_len - q) + 1  # BOS, demonstrations and their separators
    ft_tokens, ft_calls = 3 * cfg.k * q, 2 * cfg.k  # forward + backward per example, batch 1
    grid = len(cfg.lr_grid)
    batch = 64
    tok = calls = 0.0
    # demonstration seeds on dev (prefix cached)
    tok += len(cfg.demo_seeds) * (prefix + cfg.n_dev * q)
    calls += len(cfg.demo_seeds) * (1 + cfg.n_dev / batch)
    # the learning-rate search: a finetuning and a zero-shot pass on dev (and test) per rate
    read = cfg.n_dev + (cfg.n_test if select_on_test else 0)
    tok += grid * (ft_tokens + read * q)
    calls += grid * (ft_calls + read / batch)
    # the final finetuning, Z and F recorded, I recorded over whole prompts (no cache), nonce
    # labels, the shuffled-label ICL (cached) and FT
    per_row = max(1, min(128, probe.LOGIT_BUDGET // ((prefix + q) * vocab)))
    tok += 2 * ft_tokens + 4 * cfg.n_test * q + cfg.n_test * (prefix + q) + 2 * prefix
    calls += 2 * ft_calls + 4 * cfg.n_test / batch + cfg.n_test / per_row
    if not controls:
        return tok, calls, prefix * 0.5 + q
    # two untrained models on the control examples: finetuning, Z and F, I recorded
    n_c = min(cfg.control_examples, cfg.n_test)
    tok += 2 * (ft_tokens + 2 * n_c * q + n_c * (prefix + q))
    calls += 2 * (ft_calls + n_c / per_row + 2 * n_c / batch)
    # two demonstrations: three seeds, every other rate, Z/I/F/nonce, order flips
    short = 2 * (q + 1) + 1
    tok += 3 * (short + cfg.n_dev * q) + (grid // 2) * (6 * q + cfg.n_dev * q) + 4 * cfg.n_test * q
    n_o = min(200, cfg.n_test)
    tok += cfg.permutations * (short + n_o * q + 2 * 6 * q + 2 * n_o * q)
    calls += 3 + grid // 2 * 5 + 4 * cfg.n_test / batch + cfg.permutations * (3 * n_o / batch + 8)
    return tok, calls, prefix * 0.5 + q


def estimate(
    n_params: int,
    layers: int,
    d_model: int,
    names: Sequence[str],
    cfg: Config,
    *,
    dtype: torch.dtype = torch.float16,
    max_len: int = 2048,
    select_on_test: bool = False,
    gpu: str = "T4",
    vocab: int = 50_272,
    heads: int = 16,
    controls: bool = True,
) -> dict[str, float]:
    """The cost of :func:`study` on ``names``: ``minutes`` per task (mean) and in all, forward
    ``tokens``, and ``gpu_gib``, the peak GPU memory (four copies of the weights: the model, the
    finetuned one, and during the controls a random model and its finetuned copy (during the
    learning-rate search, the copy being tuned and the last one), the K/V masters in float32;
    plus the largest transient: a forward pass's logits, eager attention and recorded
    activations at the longest prompt). Its basis: :data:`TYPICAL_TOKENS`, :data:`THROUGHPUT`,
    :data:`CALL_SECONDS` (assumed, not measured). ``controls=False``: the protocol alone (what
    ``python -m iclbook.implicit.hf`` runs)."""
    if gpu not in THROUGHPUT:
        raise ValueError(f"no throughput assumed for {gpu!r}; known: {sorted(THROUGHPUT)}")
    size = torch.finfo(dtype).bits // 8
    seconds, tokens = [], 0.0
    for name in names:
        tok, calls, ctx = task_tokens(name, cfg, max_len, select_on_test, controls, vocab)
        flops = tok * (2 * n_params + 4 * layers * d_model * ctx)
        seconds.append(flops / THROUGHPUT[gpu][dtype] + calls * CALL_SECONDS)
        tokens += tok
    kv = 2 * layers * (d_model**2 + d_model)
    weights = 4 * (n_params * size + kv * (4 - size))
    logits = probe.LOGIT_BUDGET * 4 * 2  # float32 logits and their log-softmax
    attention = heads * max_len**2 * 4 * 2  # one layer's scores and probabilities, float32, batch 1
    recorded = 4 * layers * max_len * d_model * size  # q, k, out and x of every layer, one prompt
    peak = (weights + logits + attention + recorded) / 2**30
    total = sum(seconds) / 60
    return {
        "minutes_per_task": round(total / max(1, len(names)), 1),
        "minutes": round(total, 1),
        "tokens": tokens,
        "gpu_gib": round(peak, 1),
    }


def describe(est: Mapping[str, float], model: str, names: Sequence[str], gpu: str = "T4") -> str:
    return (
        f"{model} on {len(names)} task(s) ({', '.join(names)}): about {est['minutes_per_task']:.0f} min per task, "
        f"{est['minutes']:.0f} min in all on a {gpu} (assumed throughput, not measured), "
        f"{est['tokens'] / 1e6:.1f}M forward tokens, peak GPU memory about {est['gpu_gib']:.1f} GiB"
    )


def model_sizes(model) -> dict[str, int]:
    """``n_params``, ``layers``, ``d_model``, ``heads``, ``vocab`` of a Hugging Face model (or an
    :class:`.families.Adapted` one)."""
    c = model.config
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "layers": int(c.num_hidden_layers),
        "d_model": int(c.hidden_size),
        "heads": int(c.num_attention_heads),
        "vocab": int(c.vocab_size),
    }


class Meter:
    """A progress bar in forward tokens (the unit of :func:`estimate`), fed by an
    :class:`.families.Adapted` model's forward passes."""

    def __init__(self, total: float, desc: str, enabled: bool = True):
        self.bar = tqdm(total=int(total), desc=desc, unit="tok", unit_scale=True, file=sys.stderr, disable=not enabled)

    def __enter__(self) -> Meter:
        families.METER[0] = self.bar.update
        return self

    def __exit__(self, *exc) -> None:
        families.METER[0] = None
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------


def untrained_like(model, seed: int):
    """A fresh random model of ``model``'s architecture and dtype (Deutch et al.'s "No
    Training"), adapted like it; our TinyLM goes to :func:`.experiment.untrained_like`."""
    if not isinstance(model, families.Adapted):
        return experiment.untrained_like(model, seed)
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.hf.config)
    with runtime.seeded(seed):
        fresh = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    device = probe.device_of(model)
    return families.adapt(fresh, model.dtype).to(device).eval()


def short_context(model, name: str, cfg: Config, seed: int, data, codec, max_len: int, k: int = 2) -> dict:
    """:func:`.experiment.short_context` on given data and codec (the real data sets): the
    protocol with ``k`` demonstrations (every other learning rate, three demonstration seeds),
    Rec2FTP with its independence and difficulty-matched nulls, and the order flips."""
    return experiment.short_context(model, name, cfg, seed, k=k, data=data, codec=codec, max_len=max_len)


def study(
    model,
    tokenizer,
    names: Sequence[str],
    cfg: Config,
    seed: int = 0,
    *,
    loader: Callable = hf.load_split,
    max_len: int | None = None,
    select_on_test: bool = False,
    progress: bool = True,
    label: str = "model",
) -> dict:
    """The chapter's protocol, statistics and controls on ``model`` for the tasks ``names``
    (module docstring). Returns ``{"tasks": {name: {...}}, "cfg": cfg}``: per task ``acc``,
    ``stats``, ``untrained`` and ``untrained_2`` (statistics of the two random models on the
    first ``cfg.control_examples`` test examples) and ``short`` (:func:`short_context`)."""
    model = hf.as_probed(model)
    codec = TextCodec(tokenizer)
    max_len = max_len or hf.context_length(model)
    show = progress and runtime.progress_enabled()
    sizes = model_sizes(model) if hasattr(model, "config") else None
    out = {}
    for name in names:
        total = task_tokens(name, cfg, max_len, select_on_test, vocab=sizes["vocab"] if sizes else 50_272)[0]
        with Meter(total, f"{label}: {name}", enabled=show and sizes is not None):
            data = hf.splits(name, cfg, seed, loader=loader)
            run = experiment.run_task(
                model, name, cfg, seed, data=data, codec=codec, max_len=max_len, shuffled=True,
                select_on_test=select_on_test,
            )  # fmt: skip
            gen = torch.Generator().manual_seed(seed)
            stats = experiment.statistics(run, gen, cfg.kendall_examples)
            controls = []
            for j in range(2):  # one random model at a time (each is a copy of the weights)
                fresh = untrained_like(model, seed + 1000 + j)
                r = experiment.rerun(fresh, run, n=cfg.control_examples, max_len=max_len)
                controls.append(experiment.statistics(r, gen, cfg.kendall_examples))
                del fresh, r
            short = short_context(model, name, cfg, seed, data, codec, max_len)
        out[name] = {
            "acc": run.acc,
            "lr": run.lr,
            "demo_seed": run.demo_seed,
            "stats": stats,
            "untrained": controls[0],
            "untrained_2": controls[1],
            "short": short,
            "n_test": len(run.test),
        }
    return {"tasks": out, "cfg": cfg}


# ---------------------------------------------------------------------------------------------
# The ledger rows
# ---------------------------------------------------------------------------------------------

PREFIX = "Real model: "
SEC = "sec-ch2-real"


def _row(book: ledger.Ledger, kind: str, claim: str, *, criterion, null, inconclusive, **kw):
    """Record one row; where the null passes the criterion, the row cannot tell the model from
    its null and is recorded inconclusive with that reason."""
    if not inconclusive and null is not None and null.verdict(criterion) == "reproduced":
        inconclusive = f"its null ({null.what}) passes the criterion too: the measurement cannot tell them apart"
    record_fn = book.claim if kind == "claim" else book.control
    return record_fn(PREFIX + claim, criterion=criterion, null=null, inconclusive=inconclusive, section=SEC, **kw)


def record(book: ledger.Ledger | None, result: Mapping, *, model: str, inconclusive: str | None = None) -> list:
    """The chapter's claims and controls on ``result`` (:func:`study`) as rows of ``book``, the
    chapter's ledger (its record then carries them); ``None`` puts them in a ledger of their own
    that no record keeps (a stand-in's rows, shown but never counted). ``inconclusive`` (a reason)
    declares them all undecided (a random stand-in model). Returns the rows."""
    if book is None:
        book = ledger.Ledger("02", "Dai et al. 2023 (stand-in, not recorded)")
    tasks = result["tasks"]
    cfg = result["cfg"]
    names = list(tasks)
    if not names:
        raise ValueError("no task in this study")
    acc = {k: np.array([tasks[n]["acc"][k] for n in names]) for k in ("Z", "I", "F", "I_shuffled", "F_shuffled")}
    n_test = min(tasks[n]["n_test"] for n in names)
    # a gain must exceed the widest 95% half-width of a paired difference of accuracies over the
    # n test examples (|d| <= 1 per example, so its SE <= 1/sqrt(n)), as the chapter's FT row
    margin = 1.96 / math.sqrt(n_test)
    need = ledger.at_least(math.ceil(2 * len(names) / 3), partly=math.ceil(len(names) / 3), what="tasks")
    rows = []

    # ICL and FT must beat both zero-shot and their own label-shuffled runs: shuffled-label ICL of
    # a pretrained model often beats zero-shot (the label words and the format alone help)
    def beats(x, shuffled):
        return int((x >= np.maximum(acc["Z"], shuffled) + margin).sum())

    for key, what, paper in (
        ("I", "ICL", "ICL - ZSL = 13-33 pts (1.3B), 11-40 (2.7B)"),
        ("F", "finetuning", "FT > ZSL on 6/6"),
    ):
        shuffled = acc[f"{key}_shuffled"]
        value = beats(acc[key], shuffled)
        rows.append(
            _row(
                book,
                "claim",
                f"{model}: {what} beats zero-shot (and its shuffled-label run)",
                paper=paper,
                ours=f"{value}/{len(names)} tasks ≥ max(ZSL, shuffled labels) + {100 * margin:.1f} pts; "
                f"mean {100 * acc[key].mean():.1f} vs ZSL {100 * acc['Z'].mean():.1f}",
                value=value,
                criterion=need,
                null=ledger.null(f"{what} on the demonstrations with their labels shuffled", beats(shuffled, shuffled)),
                inconclusive=inconclusive,
            )  # fmt: skip
        )
    stats = {n: tasks[n]["stats"] for n in names}

    def mean(key, per=stats):
        return experiment.task_mean(per, names, key)

    rows.append(
        _row(
            book,
            "claim",
            f"{model}: SimAOU(ΔFT) is well above its random baseline",
            paper="0.186 / 0.225 vs ≈0.002",
            ours=f"{mean('simaou'):.3f} vs {mean('simaou_random'):.3f}",
            value=mean("simaou"),
            criterion=ledger.at_least(
                mean("simaou_random") + 0.05,
                partly=mean("simaou_random") + 0.02,
                what="SimAOU (random baseline + 0.05)",
            ),
            null=ledger.null("the paper's random update u ~ U[0,1)^d in place of ΔFT", mean("simaou_random")),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    rows.append(
        _row(
            book,
            "claim",
            f"{model}: Kendall(ICL, FT) is above the random baseline",
            paper="0.193 / 0.214 vs 0.000",
            ours=f"{mean('kendall'):.3f} vs {mean('kendall_random'):.3f}",
            value=mean("kendall"),
            criterion=ledger.at_least(
                mean("kendall_random") + 0.02,
                partly=mean("kendall_random") + 0.01,
                what="τ(ICL, FT) (random baseline + 0.02)",
            ),
            null=ledger.null("the paper's random scores in place of FT's", mean("kendall_random")),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    untrained = {n: tasks[n]["untrained"] for n in names}
    untrained_2 = {n: tasks[n]["untrained_2"] for n in names}
    gap = mean("simam_after") - mean("simam_before")
    gap_null = mean("simam_after", untrained) - mean("simam_before", untrained)
    rows.append(
        _row(
            book,
            "claim",
            f"{model}: SimAM is higher after FT than before",
            paper="0.442 vs 0.338 (1.3B)",
            ours=f"after {mean('simam_after'):.3f} vs before {mean('simam_before'):.3f}",
            value=gap,
            criterion=ledger.at_least(0.05, partly=0.0, what="SimAM after − before"),
            null=ledger.null(
                f"a random model of the same architecture, first {cfg.control_examples} test examples", gap_null
            ),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    fixed = [n for n in names if stats[n]["n_fixed"] >= 10]
    share = ledger.at_least(0.5, partly=0.25, what="share of the room between the null and 100%")

    def rec2ftp_row(rate, null_value, n):
        lo, hi = metrics.rate_interval(rate, n)
        return (
            ledger.share(rate, null_value, 100.0),
            (ledger.share(lo, null_value, 100.0), ledger.share(hi, null_value, 100.0)),
            ledger.share(null_value, null_value, 100.0),
        )

    r2f = float(np.mean([stats[n]["rec2ftp"] for n in fixed])) if fixed else float("nan")
    r2f_null = float(np.mean([stats[n]["rec2ftp_null"] for n in fixed])) if fixed else float("nan")
    n_fixed = sum(stats[n]["n_fixed"] for n in fixed)
    value, iv, null_share = rec2ftp_row(r2f, r2f_null, max(n_fixed, 1))
    why = inconclusive or (None if fixed else "no task has 10 examples that FT fixes")
    why = why or (f"ICL is at its ceiling: the null is {r2f_null:.1f}%" if not r2f_null < 95 else None)
    rows.append(
        _row(
            book,
            "control",
            f"{model}: Rec2FTP, ICL recovers what FT recovers beyond its independence null",
            paper="85.6 / 89.4% (no null reported)",
            ours=f"Rec2FTP {r2f:.1f}% vs null {r2f_null:.1f}% on {len(fixed)} tasks ({n_fixed} fixed examples)",
            value=value,
            interval=iv,
            criterion=share,
            null=ledger.null(f"independence, P(I right | Z wrong) = {r2f_null:.1f}%", null_share),
            rivals={"independence null": 0.0},
            inconclusive=why,
        )  # fmt: skip
    )
    random_models = (untrained,)

    def random_margin(per):
        return min(mean(k, per) - max(mean(k, r) for r in random_models) for k in ("simaou", "simam_delta"))

    rows.append(
        _row(
            book,
            "control",
            f"{model}: SimAOU and SimAM on updates are higher than a random model's",
            paper="(critique: random models score as high; Deutch et al. 2024)",
            ours=f"smaller margin over the random model {random_margin(stats):.3f}",
            value=random_margin(stats),
            criterion=ledger.at_least(0.05, partly=0.02, what="smaller margin"),
            null=ledger.null("a second random initialisation in place of the model", random_margin(untrained_2)),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    kept = mean("simaou_mismatched") / mean("simaou") if mean("simaou") else float("nan")
    draws = np.mean([stats[n]["simaou_mismatched_draws"] for n in names], axis=0)
    share_null = np.array([np.delete(draws, j).mean() / draws[j] for j in range(len(draws))])
    rows.append(
        _row(
            book,
            "control",
            f"{model}: SimAOU, mismatched pairs keep under half of it",
            paper="0.186 / 0.225",
            ours=f"matched {mean('simaou'):.3f}, mismatched {mean('simaou_mismatched'):.3f}",
            value=kept,
            criterion=ledger.at_most(0.5, partly=0.75, what="mismatched / matched"),
            null=ledger.null(
                f"a mismatched pairing in place of the matched pairs ({len(draws)} pairings)", float(share_null.mean())
            ),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    rows.append(
        _row(
            book,
            "control",
            f"{model}: Kendall, the finetuned query ranks ICL's attention better than q_Z",
            paper="(no such control in the paper)",
            ours=f"τ(ICL, FT) {mean('kendall'):.3f} vs {mean('kendall_q_zero'):.3f}",
            value=mean("kendall"),
            criterion=ledger.at_least(
                mean("kendall_q_zero") + 0.05,
                partly=mean("kendall_q_zero") + 0.02,
                what="τ(ICL, FT) (τ(ICL, q_Z) + 0.05)",
            ),
            null=ledger.null("the un-finetuned query q_Z (a no-op update)", mean("kendall_q_zero")),
            inconclusive=inconclusive,
        )  # fmt: skip
    )
    # off the ceiling: two demonstrations, tasks with chance + 10 <= ICL <= 95
    short = {n: experiment.pool_short([tasks[n]["short"]], min_changed=0.05) for n in names}
    chance = [1 / TASKS[n].n_classes for n in names]
    off = experiment.off_ceiling(short, names, chance)
    off_fixed = [n for n in off if short[n]["n_fixed"] >= 10]
    if off_fixed:
        w = [short[n]["n_fixed"] for n in off_fixed]
        pooled = {
            k: float(np.average([short[n][k] for n in off_fixed], weights=w)) for k in ("rec2ftp", "matched_null")
        }
    else:
        pooled = {"rec2ftp": float("nan"), "matched_null": float("nan")}
    n_off = sum(short[n]["n_fixed"] for n in off_fixed)
    value, iv, null_share = rec2ftp_row(pooled["rec2ftp"], pooled["matched_null"], max(n_off, 1))
    why = inconclusive or (None if off_fixed else "no task off the ceiling at k = 2 has 10 examples that FT fixes")
    rows.append(
        _row(
            book,
            "control",
            f"{model}: Rec2FTP off the ceiling (k = 2) beyond the difficulty-matched null",
            paper="85.6 / 89.4% (no null reported)",
            ours=f"on {', '.join(off_fixed) or 'no task'}: Rec2FTP {pooled['rec2ftp']:.1f}% vs matched null "
            f"{pooled['matched_null']:.1f}%",
            value=value,
            interval=iv,
            criterion=share,
            null=ledger.null(f"the difficulty-matched null ({pooled['matched_null']:.1f}%)", null_share),
            rivals={"matched null": 0.0},
            inconclusive=why,
        )  # fmt: skip
    )
    order_tasks = [n for n in off if short[n]["order"]["seeds"]]
    m_order = [short[n]["order"]["SGD"] - short[n]["order"]["ICL"] for n in order_tasks]
    m_null = [short[n]["order"]["GD"] - short[n]["order"]["ICL"] for n in order_tasks]
    why = inconclusive or (None if order_tasks else "no task off the ceiling where finetuning changed predictions")
    rows.append(
        _row(
            book,
            "control",
            f"{model}: order, off the ceiling (k = 2), sequential SGD is more order-sensitive than ICL",
            paper="(critique: ICL is order-sensitive, GD is not; Shen et al. 2024)",
            ours="; ".join(
                f"{n}: ICL {100 * short[n]['order']['ICL']:.1f}%, SGD {100 * short[n]['order']['SGD']:.1f}%"
                for n in order_tasks
            )
            or "no task off the ceiling",
            value=float(np.mean(m_order)) if m_order else float("nan"),
            criterion=ledger.holds(
                "SGD flips ≥ 5 points more than ICL on every task off the ceiling (partly: on their average)",
                bool(m_order) and min(m_order) >= 0.05,
                partly=bool(m_order) and float(np.mean(m_order)) >= 0.05,
            ),
            null=ledger.null(
                "full-batch GD (blind to the order) in place of SGD",
                float(np.mean(m_null)) if m_null else float("nan"),
                passes=bool(m_null) and min(m_null) >= 0.05,
            ),
            inconclusive=why,
        )  # fmt: skip
    )
    return rows


# ---------------------------------------------------------------------------------------------
# The reader's path
# ---------------------------------------------------------------------------------------------

#: Sizes of models a Colab reader might try (``n_params``, ``layers``, ``d_model``, ``heads``,
#: ``vocab``; parameter counts as their configs give them, rounded to the thousand), so that
#: the estimate can be printed before any download. Once a model is loaded,
#: :func:`model_sizes` reads its own.
KNOWN_SIZES = {
    "gpt2": dict(n_params=124_440_000, layers=12, d_model=768, heads=12, vocab=50_257),
    "gpt2-medium": dict(n_params=354_823_000, layers=24, d_model=1024, heads=16, vocab=50_257),
    "facebook/opt-125m": dict(n_params=125_239_000, layers=12, d_model=768, heads=12, vocab=50_272),
    "facebook/opt-350m": dict(n_params=331_196_000, layers=24, d_model=1024, heads=16, vocab=50_272),
    "EleutherAI/pythia-160m": dict(n_params=162_322_000, layers=12, d_model=768, heads=12, vocab=50_304),
    "EleutherAI/pythia-410m": dict(n_params=405_334_000, layers=24, d_model=1024, heads=16, vocab=50_304),
    "KoboldAI/fairseq-dense-1.3B": dict(n_params=1_313_460_000, layers=24, d_model=2048, heads=32, vocab=50_261),
}

#: The offline stand-in's sizes (a tiny random model, one task): seconds on a CPU.
STANDIN_CFG = Config(
    n_test=24, n_dev=12, k=4, pool=16, demo_seeds=(1,), lr_grid=(0.01, 0.1), eval_seeds=1,
    kendall_examples=8, control_examples=12, permutations=2,
)  # fmt: skip


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face Hub opens within ``timeout`` seconds (and
    ``HF_HUB_OFFLINE`` is not set)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def summary_rows(result: Mapping) -> list[list[str]]:
    """One table row per task of a :func:`study`: accuracies (with the shuffled-label nulls) and
    the four statistics."""
    out = []
    for name, t in result["tasks"].items():
        a, s = t["acc"], t["stats"]
        out.append(
            [name]
            + [f"{100 * a[k]:.1f}" for k in ("Z", "I", "F", "I_shuffled", "F_shuffled")]
            + [f"{s['rec2ftp']:.1f} ({s['rec2ftp_null']:.1f})", f"{s['simaou']:.3f} ({s['simaou_random']:.3f})"]
            + [f"{s['simam_before']:.3f} → {s['simam_after']:.3f}", f"{s['kendall']:.3f} ({s['kendall_random']:.3f})"]
        )
    return out


SUMMARY_HEADER = [
    "task", "ZSL", "ICL", "FT", "ICL, shuffled labels", "FT, shuffled labels", "Rec2FTP (null)",
    "SimAOU (random)", "SimAM before → after", "Kendall (random)",
]  # fmt: skip


def ledger_rows(rows: Sequence) -> list[list[str]]:
    """Ledger rows of :func:`record` as table rows: the claim (without :data:`PREFIX`), ours,
    the null and its value, the verdict."""
    out = []
    for r in rows:
        null = f"{r.null_what}: {r.null:.3g}" if isinstance(r.null, float) else r.null_what
        out.append([r.claim.removeprefix(PREFIX), r.ours, null, r.verdict])
    return out
