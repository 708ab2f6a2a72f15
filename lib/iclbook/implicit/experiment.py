"""The chapter's experiment: zero-shot (Z), in-context (I) and finetuned (F) runs of a language
model on the six tasks, with the paper's protocol and the critics' controls.

Per task and evaluation seed ``s``:

1. data: a pool of training examples (the demonstrations come from it), a *dev* split and a
   *test* split, all drawn with ``s``;
2. the demonstration seed (which ``k`` pool examples, in which order) is chosen among
   ``cfg.demo_seeds`` for the best ICL accuracy on dev; the paper chose it on the reported split;
3. the finetuning learning rate is chosen on dev from ``cfg.lr_grid`` (also on test, as the paper
   did, for comparison); finetuning is :func:`probe.finetune_kv` on the same demonstrations in the
   same order;
4. Z, I and F are recorded on test (attention outputs, score rows, queries) for the statistics of
   :mod:`.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iclbook import runtime
from iclbook.implicit import dual_form, metrics, probe
from iclbook.implicit.codec import WORDS, Codec
from iclbook.implicit.config import CONFIGS, LR_GRID, STREAMS, Config  # noqa: F401 (the chapter reads them here)
from iclbook.implicit.data import PRIOR, PRIOR_STRENGTH, Dataset, Task, make_dataset
from iclbook.implicit.model import TinyLM
from iclbook.implicit.pretrain import label_accuracy_by_context, load_shipped, perplexity_by_length


@dataclass
class TaskRun:
    """Everything one task and one evaluation seed produced."""

    name: str
    test: Dataset
    demos: list
    demo_seed: int
    lr: float
    lr_on_test: float
    acc: dict[str, float]
    right: dict[str, torch.Tensor]
    ft: probe.FinetuneResult | None = None
    records: dict[str, dict] = field(default_factory=dict)
    spans: list = field(default_factory=list)
    codec: Codec = WORDS
    pred: dict[str, torch.Tensor] = field(default_factory=dict)  # predicted classes of Z, I, F


def splits(name: str, cfg: Config, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """(pool, dev, test) of task ``name`` for evaluation seed ``seed``."""
    return (
        make_dataset(name, cfg.pool, seed, split="train"),
        make_dataset(name, cfg.n_dev, seed, split="dev"),
        make_dataset(name, cfg.n_test, seed, split="test"),
    )


def demo_generator(seed: int, demo_seed: int) -> torch.Generator:
    """The demonstration draw ``demo_seed`` of evaluation seed ``seed`` (library stream "demos")."""
    return runtime.stream("demos", seed, demo_seed)


def ft_examples(task: Task, demos: Sequence[tuple[object, str]], codec: Codec = WORDS) -> list[list[int]]:
    return [codec.example(task, x, y) for x, y in demos]


def lr_search(
    model: nn.Module,
    task: Task,
    demos,
    grid: Sequence[float],
    datasets: Sequence[Dataset],
    max_len: int,
    codec: Codec = WORDS,
) -> list[list[float]]:
    """Zero-shot accuracy on each of ``datasets`` of the model finetuned at each learning rate of
    ``grid`` (one finetuning per rate, however many data sets read it): ``acc[d][i]``."""
    examples = ft_examples(task, demos, codec)
    accs = [[] for _ in datasets]
    if isinstance(model, TinyLM):  # every rate in one pass (probe.finetune_kv_rates)
        stack = probe.finetune_kv_rates(model, examples, grid)
        for out, data in zip(accs, datasets):
            out.extend(float((p == data.classes).float().mean()) for p in stack.predict(data, max_len, codec))
        return accs
    for lr in grid:
        tuned = probe.finetune_kv(model, examples, lr).model
        for out, data in zip(accs, datasets):
            out.append(probe.accuracy(probe.predict(tuned, data, max_len=max_len, codec=codec), data))
    return accs


def best_lr(grid: Sequence[float], accs: Sequence[float]) -> float:
    """The grid value with the best accuracy; ties go to the smaller learning rate."""
    return grid[min(range(len(grid)), key=lambda i: (-accs[i], grid[i]))]


def sparse_search(cfg: Config, every: int) -> Config:
    """``cfg`` with a cheaper selection for the side experiments: its first three demonstration
    seeds and every ``every``-th learning rate of its grid."""
    return replace(cfg, demo_seeds=cfg.demo_seeds[:3], lr_grid=cfg.lr_grid[::every])


def evaluate_zif(
    model: nn.Module,
    tuned: nn.Module,
    test: Dataset,
    demos,
    record: bool,
    max_len: int,
    codec: Codec = WORDS,
    full_rows: int | None = None,
    preds: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict], list]:
    """Correctness masks of Z (``model``, no demonstrations), I (``model`` with ``demos``) and F
    (``tuned``, no demonstrations) on ``test``; with ``record`` also their :func:`probe.record`
    outputs (log-probabilities of the candidate labels only; with ``full_rows``, ICL's score rows
    over the whole context only for the first ``full_rows`` examples, the ones the Kendall
    statistic reads, and over the query prompt for the rest). Returns ``(right, records,
    spans)``, ``spans`` the demonstrations' token spans; a dict given as ``preds`` receives the
    predicted classes of Z, I and F."""
    zero, _ = probe.build_prompts(test, [], max_len, codec)
    icl, spans = probe.build_prompts(test, demos, max_len, codec)
    cand = codec.label_ids(test.task.labels)
    right, recs = {}, {}
    tail = max(len(p) for p in zero) if full_rows is not None else None
    for key, m, prompts in (("Z", model, zero), ("I", model, icl), ("F", tuned, zero)):
        if record:
            bound = dict(full_rows=full_rows, tail=tail) if key == "I" else {}
            recs[key] = probe.record(m, prompts, pad=codec.pad_id, columns=cand, **bound)
            pred = recs[key]["logprobs"].argmax(-1)
        else:
            pred = probe.label_logprobs(m, prompts, cand, pad=codec.pad_id).argmax(-1)
        right[key] = pred == test.classes
        if preds is not None:
            preds[key] = pred
    return right, recs, spans


def run_task(
    model: nn.Module,
    name: str,
    cfg: Config,
    seed: int,
    *,
    record: bool = True,
    select_on_test: bool = True,
    max_len: int = 256,
    data=None,
    codec: Codec = WORDS,
    shuffled: bool = False,
) -> TaskRun:
    """Steps 1-4 of the module docstring for one task (``record=False``: accuracies only;
    ``select_on_test=False`` skips the paper's selection on the reported split; ``shuffled``
    adds ICL and FT with the demonstrations' labels permuted among them, ``I_shuffled`` and
    ``F_shuffled``: the nulls of their gains over zero-shot).

    ``data`` is ``(pool, dev, test)`` (default: the synthetic :func:`splits`) and ``codec`` turns
    its examples into token ids: :func:`iclbook.implicit.hf.splits` and a
    :class:`~iclbook.implicit.codec.TextCodec` run the same protocol on real text."""
    pool, dev, test = splits(name, cfg, seed) if data is None else data
    task = pool.task
    if task.name != name or dev.task != task or test.task != task:
        raise ValueError(f"data of tasks {pool.task.name}/{dev.task.name}/{test.task.name} given for {name!r}")
    best = None
    for ds in cfg.demo_seeds:
        demos = probe.demonstrations(pool, cfg.k, demo_generator(seed, ds))
        acc = probe.accuracy(probe.predict(model, dev, demos, max_len=max_len, codec=codec), dev)
        if best is None or acc > best[0]:
            best = (acc, ds, demos)
    _, demo_seed, demos = best
    # one finetuning per learning rate, read on dev (our choice) and on test (the paper's)
    accs = lr_search(model, task, demos, cfg.lr_grid, [dev, test] if select_on_test else [dev], max_len, codec)
    lr = best_lr(cfg.lr_grid, accs[0])
    lr_test = best_lr(cfg.lr_grid, accs[1]) if select_on_test else float("nan")
    ft = probe.finetune_kv(model, ft_examples(task, demos, codec), lr, keep_queries=record)
    preds: dict[str, torch.Tensor] = {}
    right, recs, spans = evaluate_zif(
        model, ft.model, test, demos, record, max_len, codec, full_rows=cfg.kendall_examples, preds=preds
    )
    nonce = probe.nonce_labels(task, demo_generator(seed, 99), codec.nonce_pool)
    nonce_demos = [(x, nonce[task.labels.index(y)]) for x, y in demos]
    right["nonce"] = probe.predict(model, test, nonce_demos, labels=nonce, max_len=max_len, codec=codec) == test.classes
    if shuffled:
        # the nulls of ICL's and FT's gains: the same demonstrations with their labels permuted
        # among them (no input-label mapping left), read in context and finetuned on at the same rate
        mixed = shuffled_demos(demos, demo_generator(seed, 98))
        right["I_shuffled"] = probe.predict(model, test, mixed, max_len=max_len, codec=codec) == test.classes
        tuned = probe.finetune_kv(model, ft_examples(task, mixed, codec), lr).model
        right["F_shuffled"] = probe.predict(tuned, test, max_len=max_len, codec=codec) == test.classes
    acc = {k: float(v.float().mean()) for k, v in right.items()}
    # the finetuning at the rate chosen on test, by the same sequential SGD as FT itself (the
    # search reads every rate at once, which agrees with it only to rounding where SGD is unstable)
    if not select_on_test:
        acc["F_test_selected"] = float("nan")
    elif lr_test == lr:
        acc["F_test_selected"] = acc["F"]
    else:
        tuned = probe.finetune_kv(model, ft_examples(task, demos, codec), lr_test).model
        acc["F_test_selected"] = probe.accuracy(probe.predict(tuned, test, max_len=max_len, codec=codec), test)
    return TaskRun(name, test, demos, demo_seed, lr, lr_test, acc, right, ft, recs, spans, codec, pred=preds)


# ---------------------------------------------------------------------------------------------
# The paper's statistics on a TaskRun
# ---------------------------------------------------------------------------------------------


def prompt_rows(run: TaskRun) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, layers, heads, T)`` score rows of Z, I, F over the *test-prompt* tokens (BOS and
    demonstrations dropped), zero-padded to one length T."""
    rows = {"Z": [], "I": [], "F": []}
    for i in range(len(run.test)):
        zs = run.records["Z"]["scores"][i][..., 1:]
        n_query = zs.shape[-1]
        rows["Z"].append(zs)
        rows["F"].append(run.records["F"]["scores"][i][..., 1:])
        rows["I"].append(run.records["I"]["scores"][i][..., -n_query:])
    width = max(r.shape[-1] for r in rows["Z"])

    def pad(r: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(r, (width - r.shape[-1], 0))  # left pad, as the paper

    return tuple(torch.stack([pad(r) for r in rows[k]]) for k in ("Z", "I", "F"))


def kendall(run: TaskRun, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Kendall's tau-b per (example, layer) between ICL's attention to the demonstration tokens
    and finetuning's ``<q'_j, q>`` to the same training tokens, computed as the paper's code does:
    ICL's pre-softmax scores summed over heads, both rows through a float64 softmax, then
    ``scipy.stats.kendalltau``.

    ICL's scores are their *content* part ``q . k / sqrt(d_h)``, without a positional score bias
    (ALiBi's ``-m_h (t - i)``; :meth:`probe.Recorder.positional_bias`): finetuning's ``<q'_j, q>``
    has no positional term, and neither have the paper's models (position embeddings added to the
    input), so this compares like with like. A model without such a bias takes the same path with
    a bias of 0. Beside ``tau``, with the same ICL row:

    * ``random``: uniform random scores (the paper's baseline);
    * ``q_zero``: the *un-finetuned* model's query ``q_Z`` in place of ``q_F``: if it ranks the
      training tokens as well, finetuning the query's model is not what the tau measures. At
      layer 1 ``q_F`` *is* ``q_Z`` (K/V finetuning cannot change the first layer's queries), so
      the two agree there by construction: read the control from layer 2 on;
    * ``recency``: the token's position (later tokens rank higher), a plain recency ramp;
    * ``tau_biased`` and ``recency_biased``: ``tau`` and ``recency`` on the recorded scores with
      the positional bias left in (what an earlier version of the chapter read).

    Each example uses the demonstrations its own prompt kept (truncation may keep fewer for a long
    query); finetuning saw all of them, in order, so the kept ones are the first."""
    out = {k: [] for k in ("tau", "random", "q_zero", "recency", "tau_biased", "recency_biased")}
    rec_i = run.records["I"]
    content = rec_i.get("content", rec_i["scores"])
    for i in range(min(n, len(run.test))):
        spans = run.spans[i]
        if not spans:
            raise ValueError(f"test example {i} kept no demonstration in its context")
        idx = torch.cat([torch.arange(a, b) for a, b in spans])
        m_i = metrics.attention_softmax(content[i].double().sum(1)[:, idx])  # (layers, tokens)
        m_b = metrics.attention_softmax(rec_i["scores"][i].double().sum(1)[:, idx])

        def ft_row(q: torch.Tensor, kept: int = len(spans)) -> torch.Tensor:  # (layers, d) -> (layers, tokens)
            return torch.stack(
                [
                    torch.cat([run.ft.queries[j][l].double() @ q[l].double() for j in range(kept)])
                    for l in range(q.shape[0])
                ]
            )

        m_f = metrics.attention_softmax(ft_row(run.records["F"]["q"][i]))
        if m_f.shape != m_i.shape:
            raise ValueError(
                f"example {i}: {m_i.shape[-1]} demonstration tokens in context but "
                f"{m_f.shape[-1]} finetuning tokens for its {len(spans)} demonstrations"
            )
        ramp = torch.arange(m_i.shape[-1], dtype=torch.float64).expand_as(m_i)
        out["tau"].append(metrics.kendall_tau(m_i, m_f))
        out["q_zero"].append(metrics.kendall_tau(m_i, metrics.attention_softmax(ft_row(run.records["Z"]["q"][i]))))
        out["recency"].append(metrics.kendall_tau(m_i, ramp))
        out["random"].append(metrics.kendall_tau(m_i, torch.rand(m_i.shape, generator=gen, dtype=torch.float64)))
        out["tau_biased"].append(metrics.kendall_tau(m_b, m_f))
        out["recency_biased"].append(metrics.kendall_tau(m_b, ramp))
    return {k: torch.stack(v) for k, v in out.items()}


def statistics(run: TaskRun, gen: torch.Generator, kendall_examples: int = 100, mismatch_draws: int = 50) -> dict:
    """The paper's four statistics and the critics' variants, averaged as the paper did (over
    examples, then layers); ``per_example`` keeps the per-example values of SimAOU, SimAM
    (before, after, and their difference) and Kendall with each of its baselines (``(examples,
    layers)``) for bootstrap intervals. SimAOU of mismatched pairs is the mean over
    ``mismatch_draws`` random derangements (``simaou_mismatched_draws``: one mean per draw).

    Kendall reads ICL's scores without a positional score bias (:func:`kendall`); the keys ending
    in ``_with_bias`` keep it in, and those ending in ``_upper`` read layer 2 on, where K/V
    finetuning can change the query (NaN for a one-layer model); ``kendall_layer1_q_gap`` is the
    largest ``|tau(ICL, FT) - tau(ICL, q_Z)|`` at layer 1, 0 by construction."""
    h = {k: run.records[k]["out"].double() for k in ("Z", "I", "F")}
    m_z, m_i, m_f = (r.double() for r in prompt_rows(run))
    z, f, i = run.right["Z"], run.right["F"], run.right["I"]
    kt = kendall(run, kendall_examples, gen)
    per_example = {
        "simaou": metrics.simaou(h["I"], h["Z"], h["F"]),
        "simaou_random": metrics.simaou_random(h["I"], h["Z"], gen),
        "simam_before": metrics.simam(m_i, m_z),
        "simam_after": metrics.simam(m_i, m_f),
        "kendall": kt["tau"],
        "kendall_random": kt["random"],
        "kendall_q_zero": kt["q_zero"],
        "kendall_minus_q_zero": kt["tau"] - kt["q_zero"],
        "kendall_minus_recency": kt["tau"] - kt["recency"],
        "kendall_q_zero_minus_recency": kt["q_zero"] - kt["recency"],
        "kendall_random_minus_recency": kt["random"] - kt["recency"],
        # from layer 2 on, where finetuning can change the query (at layer 1 q_F = q_Z)
        "kendall_upper": kt["tau"][:, 1:],
        "kendall_q_zero_upper": kt["q_zero"][:, 1:],
        "kendall_minus_q_zero_upper": (kt["tau"] - kt["q_zero"])[:, 1:],
        "kendall_recency_upper": kt["recency"][:, 1:],
    }
    per_example["simam_after_minus_before"] = per_example["simam_after"] - per_example["simam_before"]
    mismatched = [
        float(metrics.simaou(h["I"], h["Z"], metrics.mismatched(h["F"], gen)).mean()) for _ in range(mismatch_draws)
    ]
    return {
        "rec2ftp": metrics.rec2ftp(z, f, i),
        "rec2ftp_null": metrics.rec2ftp_null(z, i),
        "n_fixed": int((~z & f).sum()),
        "simaou": float(per_example["simaou"].mean()),
        "simaou_random": float(per_example["simaou_random"].mean()),
        "simaou_raw": float(metrics.simaou(h["I"], h["Z"], h["F"], normalize=False).mean()),
        "simaou_mismatched": float(np.mean(mismatched)),
        "simaou_mismatched_draws": mismatched,
        "simam_before": float(per_example["simam_before"].mean()),
        "simam_after": float(per_example["simam_after"].mean()),
        "simam_delta": float(metrics.simam_delta(m_i, m_z, m_f).nanmean()),
        "kendall": float(kt["tau"].nanmean()),
        "kendall_random": float(kt["random"].nanmean()),
        "kendall_q_zero": float(kt["q_zero"].nanmean()),
        "kendall_recency": float(kt["recency"].nanmean()),
        "kendall_upper": _nanmean(kt["tau"][:, 1:]),
        "kendall_q_zero_upper": _nanmean(kt["q_zero"][:, 1:]),
        "kendall_recency_upper": _nanmean(kt["recency"][:, 1:]),
        # the largest |tau(ICL, FT) - tau(ICL, q_Z)| at layer 1: 0 by construction
        "kendall_layer1_q_gap": float((kt["tau"][:, 0] - kt["q_zero"][:, 0]).abs().nan_to_num(0.0).max()),
        "kendall_with_bias": float(kt["tau_biased"].nanmean()),
        "kendall_recency_with_bias": float(kt["recency_biased"].nanmean()),
        "per_example": per_example,
    }


def _nanmean(x: torch.Tensor) -> float:
    """The mean of the finite entries of ``x``; NaN where there is none (no layer above the first)."""
    return float(x.nanmean()) if x.numel() else float("nan")


def task_mean(per_task: Mapping[str, Mapping[str, float]], names: Sequence[str], key: str) -> float:
    """The mean of ``per_task[name][key]`` over the tasks ``names``, NaNs left out (Rec2FTP of a
    task where finetuning fixes no example, a Kendall tau of tied rows): how a statistic of
    :func:`statistics` is averaged over tasks."""
    return float(np.nanmean([per_task[n][key] for n in names]))


# ---------------------------------------------------------------------------------------------
# Controls
# ---------------------------------------------------------------------------------------------


def rerun(
    model: nn.Module, run: TaskRun, *, demos=None, lr: float | None = None, max_len: int = 256, n: int | None = None
) -> TaskRun:
    """Z, I and F of ``model`` on ``run``'s test set (its first ``n`` examples if given) with
    ``run``'s demonstrations and learning rate (or the ones given): the same protocol, a
    different model or different demonstrations."""
    demos = run.demos if demos is None else demos
    lr = run.lr if lr is None else lr
    task = run.test.task
    test = run.test if n is None else run.test.subset(range(min(n, len(run.test))))
    ft = probe.finetune_kv(model, ft_examples(task, demos, run.codec), lr, keep_queries=True)
    right, recs, spans = evaluate_zif(model, ft.model, test, demos, True, max_len, run.codec)
    acc = {k: float(v.float().mean()) for k, v in right.items()}
    return TaskRun(run.name, test, list(demos), run.demo_seed, lr, float("nan"), acc, right, ft, recs, spans, run.codec)


def untrained_like(model: TinyLM, seed: int, keep_embeddings: bool = False) -> TinyLM:
    """A fresh random model of ``model``'s shape (Deutch et al.'s "No Training"), or with the
    pretrained embeddings and LayerNorms kept ("Trained Embeddings")."""
    with runtime.seeded(seed):  # without touching the caller's stream
        fresh = TinyLM(model.cfg)
    if keep_embeddings:
        state = {
            n: p for n, p in model.state_dict().items() if n.startswith("embed") or n.split(".")[-2].startswith("ln")
        }
        fresh.load_state_dict(state, strict=False)
    return fresh.eval()


def shuffled_demos(demos, gen: torch.Generator):
    """The same inputs with their labels permuted among the demonstrations."""
    perm = torch.randperm(len(demos), generator=gen).tolist()
    return [(x, demos[p][1]) for (x, _), p in zip(demos, perm)]


def order_flips(
    model: nn.Module,
    run: TaskRun,
    permutations: int,
    gen: torch.Generator,
    n: int = 200,
    max_len: int = 256,
    masks: bool = False,
) -> dict[str, float] | dict[str, torch.Tensor]:
    """Share of test predictions that change when the demonstrations are reordered, for ICL,
    sequential SGD (the paper's FT) and one full-batch gradient step (blind to order); with
    ``masks``, per test example whether its prediction changed (``(n,)`` booleans)."""
    test = run.test.subset(range(min(n, len(run.test))))
    task = test.task
    preds = {"ICL": [], "SGD": [], "GD": []}
    codec = run.codec
    zero, _ = probe.build_prompts(test, [], max_len, codec)
    cand = codec.label_ids(task.labels)
    for _ in range(permutations):
        perm = torch.randperm(len(run.demos), generator=gen).tolist()
        demos = [run.demos[i] for i in perm]
        preds["ICL"].append(probe.predict(model, test, demos, max_len=max_len, codec=codec))
        for key, mode in (("SGD", "sequential"), ("GD", "full")):
            tuned = probe.finetune_kv(model, ft_examples(task, demos, codec), run.lr, mode=mode).model
            preds[key].append(probe.label_logprobs(tuned, zero, cand, pad=codec.pad_id).argmax(-1))
    flipped = {k: (torch.stack(v) != torch.stack(v)[0]).any(0) for k, v in preds.items()}
    return flipped if masks else {k: float(v.float().mean()) for k, v in flipped.items()}


def head_slices(w: torch.Tensor, heads: int) -> list[torch.Tensor]:
    d = w.shape[0] // heads
    return [w[h * d : (h + 1) * d] for h in range(heads)]


@torch.no_grad()
def delta_w_cosines(
    model: nn.Module, run: TaskRun, other: TaskRun, n: int = 100, max_len: int = 256
) -> dict[str, torch.Tensor]:
    """Per (example, layer, head) Frobenius cosine between the relaxed ``dW_ICL`` of the
    demonstrations (Eq. 12, from the in-context pass's layer inputs) and ``dW_FT`` of finetuning
    (Eq. 13, from the weight changes and the zero-shot pass's layer inputs), and the same with
    ``dW_ICL`` of another task's demonstrations (``other``) as a null."""

    def dw_icl(r: TaskRun) -> list[list[torch.Tensor]]:
        prompt, spans = r.codec.prompt(r.test.task, r.demos, r.test.inputs[0], max_len=max_len)
        idx = torch.cat([torch.arange(a, b) for a, b in spans])
        with probe.Recorder(model) as rec:
            probe.logits_of(model, torch.tensor([prompt]))
        out = []
        for (_, m), x, h in zip(probe.attention_modules(model), rec.x, rec.heads):
            x_demo = x[0, idx].double().T  # (d, demonstration tokens)
            out.append(
                [
                    dual_form.icl_update(wk, wv, x_demo)
                    for wk, wv in zip(
                        head_slices(m.k_proj.weight.double(), h), head_slices(m.v_proj.weight.double(), h)
                    )
                ]
            )
        return out

    own, null = dw_icl(run), dw_icl(other)
    base = probe.attention_modules(model)
    tuned = probe.attention_modules(run.ft.model)
    zero, _ = probe.build_prompts(run.test.subset(range(min(n, len(run.test)))), [], max_len, run.codec)
    cos, cos_null = [], []
    for prompt in zero:
        with probe.Recorder(model) as rec:
            probe.logits_of(model, torch.tensor([prompt]))
        per_layer, per_layer_null = [], []
        for l, ((_, m), (_, mt)) in enumerate(zip(base, tuned)):
            h = rec.heads[l]
            x = rec.x[l][0].double().T  # (d, tokens)
            wk, wv = head_slices(m.k_proj.weight.double(), h), head_slices(m.v_proj.weight.double(), h)
            dk = head_slices((mt.k_proj.weight - m.k_proj.weight).double(), h)
            dv = head_slices((mt.v_proj.weight - m.v_proj.weight).double(), h)
            c, cn = [], []
            for j in range(h):
                ft = dual_form.ft_update(wk[j], wv[j], dk[j], dv[j], x)["dW_FT"].flatten()
                c.append(metrics.cosine(own[l][j].flatten(), ft))
                cn.append(metrics.cosine(null[l][j].flatten(), ft))
            per_layer.append(torch.stack(c))
            per_layer_null.append(torch.stack(cn))
        cos.append(torch.stack(per_layer))
        cos_null.append(torch.stack(per_layer_null))
    return {"cos": torch.stack(cos).cpu(), "null": torch.stack(cos_null).cpu()}


# ---------------------------------------------------------------------------------------------
# Off the ceiling, and outside the lookup regime
# ---------------------------------------------------------------------------------------------


def short_context(
    model: nn.Module,
    name: str,
    cfg: Config,
    seed: int,
    k: int = 2,
    n_order: int = 200,
    *,
    data=None,
    codec: Codec = WORDS,
    max_len: int = 256,
    order: bool = True,
) -> dict:
    """The protocol with only ``k`` demonstrations, where ICL on the multi-class tasks is off its
    ceiling, so that Rec2FTP and the order check can tell something: accuracies only (a sparser
    learning-rate grid and three demonstration seeds), then

    * Rec2FTP, its independence null and its *matched* null (:func:`metrics.rec2ftp_matched_null`,
      strata: whether the query's class is among the demonstrations' classes, the difficulty that
      ICL and finetuning share);
    * the share of predictions that reordering the demonstrations changes, for ICL, SGD and
      full-batch GD (``flips``; ``flip_masks`` per example);
    * ``changed``: the share of test predictions that finetuning changed (F against Z): a
      finetuning that changes none is a no-op, and an order check against it compares nothing.

    ``data``, ``codec`` and ``max_len`` are :func:`run_task`'s (a real model's data sets and
    tokenizer, :mod:`.real`). With ``order=False`` the order check is left for later (no
    ``flips``; the run is kept as ``run`` for :func:`add_order_flips`)."""
    short = replace(sparse_search(cfg, 2), k=k)
    run = run_task(
        model, name, short, seed, record=False, select_on_test=False, data=data, codec=codec, max_len=max_len
    )
    z, f, i = run.right["Z"], run.right["F"], run.right["I"]
    shown = {y for _, y in run.demos}
    covered = torch.tensor([run.test.task.labels[int(c)] in shown for c in run.test.classes])
    out = {
        "k": k,
        "acc": run.acc,
        "lr": run.lr,
        "n_fixed": int((~z & f).sum()),
        "rec2ftp": metrics.rec2ftp(z, f, i),
        "null": metrics.rec2ftp_null(z, i),
        "matched_null": metrics.rec2ftp_matched_null(z, f, i, covered.long()),
        "covered": float(covered.float().mean()),
        "changed": float((run.pred["F"] != run.pred["Z"]).float().mean()),
        "seed": seed,
        "n_fixed_right": int((~z & f & i).sum()),
    }
    if not order:
        return out | {"run": run, "n_order": n_order, "max_len": max_len}
    return add_order_flips(model, out | {"run": run}, cfg.permutations, n_order, max_len)


def add_order_flips(model: nn.Module, result: dict, permutations: int, n_order: int = 200, max_len: int = 256) -> dict:
    """:func:`short_context`'s ``result`` (with its ``run``) with the order check added: the share
    of predictions that reordering the demonstrations changes, for ICL, SGD and full-batch GD
    (``flips``; ``flip_masks`` per example), over ``permutations`` orders drawn from the
    library stream "demos" of the result's evaluation seed. The run is dropped."""
    gen = demo_generator(result["seed"], 77)
    masks = order_flips(model, result["run"], permutations, gen, n=n_order, max_len=max_len, masks=True)
    out = {k: v for k, v in result.items() if k not in ("run", "n_order", "max_len")}
    return out | {"flips": {key: float(v.float().mean()) for key, v in masks.items()}, "flip_masks": masks}


def off_ceiling_runs(
    model: nn.Module,
    names: Sequence[str],
    cfg: Config,
    seeds: Sequence[int],
    chance: Sequence[float],
    *,
    k: int = 2,
    screen: int = 3,
    min_changed: float = 0.05,
    above: float = 0.1,
    ceiling: float = 0.95,
    n_order: int = 200,
    data: Callable[[str, int], tuple] | None = None,
    codec: Codec = WORDS,
    max_len: int = 256,
) -> dict[str, dict]:
    """The runs of :func:`short_context` (``k`` demonstrations) on which Rec2FTP and the order
    check can tell something, one filter for both: ICL off its ceiling (``chance + above <= ICL
    <= ceiling``, on that run) and a finetuning that changed at least ``min_changed`` of the test
    predictions (a finetuning that changes none is a no-op to compare with). Only the runs that
    pass get the order check (:func:`add_order_flips`).

    Every task runs its first ``screen`` seeds of ``seeds``; a task none of whose screened runs
    passes is not run further (at the ceiling at every seed, or a finetuning that never changes
    anything), the others run all of ``seeds``. ``chance[j]`` is the chance accuracy of
    ``names[j]``; ``data(name, seed)``, if given, returns :func:`run_task`'s ``(pool, dev, test)``.

    Returns ``{name: {"runs": n_run, "passed": [results], "accuracy": [ICL per run], "changed":
    [...], "lr": [...]}}``: the passing results carry ``flips`` and ``flip_masks``."""
    if len(chance) != len(names):
        raise ValueError(f"{len(names)} tasks but {len(chance)} chance levels")
    if not seeds or screen < 1:
        raise ValueError("need at least one seed and screen >= 1")
    out = {}
    for name, c in zip(names, chance):
        runs, passed = [], []
        for j, seed in enumerate(seeds):
            if j == screen and not passed:
                break
            given = None if data is None else data(name, seed)
            r = short_context(
                model, name, cfg, seed, k=k, n_order=n_order, data=given, codec=codec, max_len=max_len, order=False
            )
            runs.append(r)
            if c + above <= r["acc"]["I"] <= ceiling and r["changed"] >= min_changed:
                passed.append(add_order_flips(model, r, cfg.permutations, n_order, max_len))
            r.pop("run")
        out[name] = {
            "runs": len(runs),
            "passed": passed,
            "accuracy": [r["acc"]["I"] for r in runs],
            "changed": [r["changed"] for r in runs],
            "lr": [r["lr"] for r in runs],
            "n_fixed": [r["n_fixed"] for r in runs],
        }
    return out


def pool_off_ceiling(results: Mapping[str, Mapping[str, Any]]) -> dict:
    """:func:`off_ceiling_runs`'s passing runs pooled over tasks and seeds: Rec2FTP over the
    examples that finetuning fixed (summed), its independence and matched nulls weighted by
    each run's fixed examples, the order check per task (mean flip rates over its passing runs,
    and the per-example flips of SGD minus ICL, ``diff``), and how many runs passed of how many."""
    passed = [r for res in results.values() for r in res["passed"]]
    n_fixed = sum(r["n_fixed"] for r in passed)

    def weighted(key: str) -> float:
        pairs = [(r[key], r["n_fixed"]) for r in passed if r["n_fixed"] > 0 and r[key] == r[key]]
        return float(sum(v * n for v, n in pairs) / sum(n for _, n in pairs)) if pairs else float("nan")

    order = {}
    for name, res in results.items():
        if res["passed"]:
            ps = res["passed"]
            order[name] = {key: float(np.mean([r["flips"][key] for r in ps])) for key in ps[0]["flips"]}
            order[name]["runs"] = len(ps)
            order[name]["diff"] = torch.cat(
                [r["flip_masks"]["SGD"].float() - r["flip_masks"]["ICL"].float() for r in ps]
            )
    return {
        "runs": sum(res["runs"] for res in results.values()),
        "passed": len(passed),
        "n_fixed": n_fixed,
        "rec2ftp": 100.0 * sum(r["n_fixed_right"] for r in passed) / n_fixed if n_fixed else float("nan"),
        "null": weighted("null"),
        "matched_null": weighted("matched_null"),
        "order": order,
        "tasks": [n for n, res in results.items() if res["passed"]],
    }


def pool_short(results: Sequence[dict], min_changed: float = 0.0) -> dict:
    """:func:`short_context` results of one task over several evaluation seeds, pooled: the
    fixed examples summed, Rec2FTP and its nulls averaged with the fixed examples as weights (a
    seed where FT fixes none has no say), ICL accuracy and flip rates averaged.

    The order check reads only the seeds where finetuning changed at least ``min_changed`` of
    the test predictions (``changed``, one per seed; a finetuning that changed fewer is a no-op
    for the check): ``order`` holds their number (``seeds``), their mean flip rates, and the
    per-example flips of SGD minus ICL (``diff``, pooled over them; empty where none)."""
    if not results:
        raise ValueError("nothing to pool")
    w = [r["n_fixed"] for r in results]

    def weighted(key: str) -> float:
        pairs = [(r[key], n) for r, n in zip(results, w) if n > 0 and r[key] == r[key]]
        return float(sum(v * n for v, n in pairs) / sum(n for _, n in pairs)) if pairs else float("nan")

    valid = [r for r in results if r["changed"] >= min_changed and r["changed"] > 0]
    keys = list(results[0]["flips"])
    order = {"seeds": len(valid)}
    order |= {k: float(np.mean([r["flips"][k] for r in valid])) if valid else float("nan") for k in keys}
    order["diff"] = (
        torch.cat([r["flip_masks"]["SGD"].float() - r["flip_masks"]["ICL"].float() for r in valid])
        if valid and "flip_masks" in results[0]
        else torch.zeros(0)
    )
    return {
        "k": results[0]["k"],
        "seeds": len(results),
        "n_fixed": sum(w),
        "acc": {"I": float(sum(r["acc"]["I"] for r in results) / len(results))},
        **{key: weighted(key) for key in ("rec2ftp", "null", "matched_null")},
        "flips": {k: float(sum(r["flips"][k] for r in results) / len(results)) for k in keys},
        "changed": [r["changed"] for r in results],
        "lr": [r.get("lr", float("nan")) for r in results],
        "order": order,
    }


def off_ceiling(
    short: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    chance: Sequence[float],
    *,
    above: float = 0.1,
    ceiling: float = 0.95,
) -> list[str]:
    """The tasks of ``names`` (in order) whose ICL accuracy in ``short`` (:func:`pool_short`
    results, ``short[name]["acc"]["I"]``) lies between ``chance + above`` and ``ceiling``: off the
    ceiling, so that Rec2FTP and the order check can tell something, and still far above chance.
    ``chance[j]`` is the chance accuracy of ``names[j]``."""
    if len(chance) != len(names):
        raise ValueError(f"{len(names)} tasks but {len(chance)} chance levels")
    return [n for j, n in enumerate(names) if chance[j] + above <= short[n]["acc"]["I"] <= ceiling]


def lookup_probe(
    model: nn.Module, name: str, cfg: Config, seed: int, *, cues_per_class: int = 3, k: int = 4, draws: int = 5
) -> dict[str, float]:
    """Is ICL more than matching the query's cue word to a demonstration's? With
    ``cues_per_class`` cues per class and ``k`` demonstrations, many queries carry a cue that no
    demonstration shows; over ``draws`` random draws of demonstrations (no selection), ICL's
    accuracy on those queries (``unseen``) against those whose cue a demonstration shows
    (``seen``) and against zero-shot on the same unseen queries (``zero_unseen``). Beside them,
    the expected accuracies of two readers of the same queries and demonstrations
    (:func:`reader_accuracy`): ``cue_reader_*``, the best reader of the cue words alone (a lookup
    with mutual exclusivity, the row's null), and ``bayes_reader_*``, the best reader of every
    word (its ceiling)."""
    pool = make_dataset(name, cfg.pool, seed, split="train", cues_per_class=cues_per_class)
    test = make_dataset(name, cfg.n_test, seed, split="test", cues_per_class=cues_per_class)
    cue_words = {w for c in test.cues for w in c}
    cue_of = [next(w for w in x if w in cue_words) for x in test.inputs]
    zero = probe.predict(model, test) == test.classes
    right = {"seen": [], "unseen": [], "zero_unseen": []}
    right |= {f"{r}_{part}": [] for r in ("cue_reader", "bayes_reader") for part in ("seen", "unseen")}
    for d in range(draws):
        demos = probe.demonstrations(pool, k, demo_generator(seed, 200 + d))
        shown = {next(w for w in x if w in cue_words) for x, _ in demos}
        seen = torch.tensor([c in shown for c in cue_of])
        icl = probe.predict(model, test, demos) == test.classes
        right["seen"].append(icl[seen])
        right["unseen"].append(icl[~seen])
        right["zero_unseen"].append(zero[~seen])
        for reader, words in (("cue_reader", False), ("bayes_reader", True)):
            hit = reader_accuracy(test, demos, cue_words, cues_per_class, use_words=words)
            right[f"{reader}_seen"].append(hit[seen])
            right[f"{reader}_unseen"].append(hit[~seen])
    out = {
        key: float(torch.cat(v).float().mean()) if torch.cat(v).numel() else float("nan") for key, v in right.items()
    }
    out["n_unseen"] = int(sum(v.numel() for v in right["unseen"]))
    return out


def reader_accuracy(
    test: Dataset,
    demos: Sequence[tuple[Sequence[str], str]],
    cue_words: set[str],
    cues_per_class: int,
    *,
    use_words: bool = True,
    prior_strength: float = PRIOR_STRENGTH,
) -> torch.Tensor:
    """The expected accuracy, per query of ``test`` (a lexicon task with ``cues_per_class`` cue
    words per class, the cue the input's last word), of the Bayes-optimal reader of the data's
    generating process given ``demos``:

    * a cue that a demonstration shows gives its class for certain;
    * an unseen cue is one of the classes' unseen cues, so class ``c`` has prior weight
      ``cues_per_class - s_c``, ``s_c`` the distinct cues of class ``c`` the demonstrations show
      (mutual exclusivity: the assignment of cue words to classes is uniform at random);
    * with ``use_words``, each prior-lexicon word ``v`` multiplies class ``c``'s weight by
      ``P(v | c)``: ``prior_strength`` if ``v`` is in ``c``'s lexicon, ``(1 - prior_strength) /
      (C - 1)`` otherwise (the lexicons have one size per task, which cancels); fillers carry
      nothing.

    Ties are broken at random: a query scores ``1 / (number of tied best classes)`` if its class
    is among them. Without ``use_words`` it is the best reader of the *cue words alone* (a lookup
    with mutual exclusivity); with them, the best any reader can do: nothing else in an input
    depends on its class."""
    task = test.task
    n_classes = task.n_classes
    lexicon = {w: c for c, words in enumerate(PRIOR[task.name]) for w in words}
    seen_class: dict[str, int] = {}
    for x, y in demos:
        seen_class[next(w for w in x if w in cue_words)] = task.labels.index(y)
    free = [cues_per_class - sum(1 for c in seen_class.values() if c == k) for k in range(n_classes)]
    out = []
    for x, y in zip(test.inputs, test.classes.tolist()):
        cue = next(w for w in x if w in cue_words)
        if cue in seen_class:
            out.append(float(seen_class[cue] == y))
            continue
        weight = [float(max(f, 0)) for f in free]
        if use_words:
            for w in x:
                if w in lexicon:
                    weight = [
                        wt * (prior_strength if lexicon[w] == k else (1 - prior_strength) / (n_classes - 1))
                        for k, wt in enumerate(weight)
                    ]
        best = max(weight)
        tied = [k for k, wt in enumerate(weight) if wt >= best * (1 - 1e-9)]
        out.append(1.0 / len(tied) if y in tied else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def gain_kept(results: Sequence[Mapping[str, float]], n_classes: int, reader: str = "") -> float:
    """The share of ICL's gain over chance that it keeps on queries whose cue word no demonstration
    shows, ``(unseen - 1/C) / (seen - 1/C)``, averaged over ``results`` (:func:`lookup_probe` of
    one task at several evaluation seeds; ``C = n_classes``). 1: the cue's label is not needed;
    0: unseen cues at chance, a pure lookup; below 0: worse than chance. ``reader`` reads the
    same share for one of :func:`lookup_probe`'s readers (``"cue_reader"``, ``"bayes_reader"``)
    instead of the model."""
    if not results:
        raise ValueError("no lookup_probe results to read")
    chance = 1 / n_classes
    pre = f"{reader}_" if reader else ""
    return float(np.mean([(r[pre + "unseen"] - chance) / (r[pre + "seen"] - chance) for r in results]))


def without_cues(dset: Dataset) -> Dataset:
    """``dset`` with every cue word taken out of its inputs (the data set's ``cues``; a data set
    without cue words comes back as it is): what is left is what a reader of the whole input, and
    not a lookup of one cue, can use."""
    cue_words = {w for c in dset.cues for w in c}
    return Dataset(dset.task, [[w for w in x if w not in cue_words] for x in dset.inputs], dset.classes, dset.cues)


def lexicon_likelihood(task: Task, words: Sequence[str], prior_strength: float = PRIOR_STRENGTH) -> np.ndarray:
    """``(C,)`` likelihood of an input's ``words`` under each class of a lexicon task (the data's
    generating process, :func:`reader_accuracy`): each prior-lexicon word ``v`` weighs class ``c``
    by ``prior_strength`` if ``v`` is in ``c``'s lexicon, ``(1 - prior_strength) / (C - 1)``
    otherwise; every other word carries nothing."""
    n = task.n_classes
    lexicon = {w: c for c, ws in enumerate(PRIOR.get(task.name, ())) for w in ws}
    out = np.ones(n)
    for w in words:
        if w in lexicon:
            out *= np.where(np.arange(n) == lexicon[w], prior_strength, (1 - prior_strength) / (n - 1))
    return out


def _expected_hit(scores: np.ndarray, truth: int) -> float:
    """1 / (tied best) if ``truth`` is among the best of ``scores``, else 0 (ties broken at random)."""
    best = scores.max()
    tied = np.flatnonzero(scores >= best * (1 - 1e-9) - 1e-300)
    return 1.0 / len(tied) if truth in tied else 0.0


def mapping_reader(
    demos: Sequence[tuple[Sequence[str], str]],
    test: Dataset,
    labels: Sequence[str],
    likelihood: Callable[[Task, Sequence[str]], np.ndarray] = lexicon_likelihood,
) -> torch.Tensor:
    """The expected accuracy per query of ``test`` of the Bayes-optimal reader of the *whole
    input* that knows what the words say about the classes (``likelihood``) but not which label
    word names which class (``labels``, a verbalizer the weights never saw): it weighs every
    assignment of the labels to the classes by how well the demonstrations' words fit it (the
    classes uniform a priori), then scores each label by the query's likelihood under its class.
    A reader that reads only one token (:func:`one_token_reader`) cannot learn the assignment from
    words it never matches."""
    import itertools

    task = test.task
    n = task.n_classes
    idx = {w: j for j, w in enumerate(labels)}
    like = [likelihood(task, x) for x, _ in demos]
    perms = list(itertools.permutations(range(n)))  # perm[c] = the label index of class c
    post = np.array(
        [np.prod([lk[perm.index(idx[y])] for lk, (_, y) in zip(like, demos)]) if demos else 1.0 for perm in perms]
    )
    post = post / post.sum()
    # M[label, class] = P(label names class | demonstrations)
    m = np.zeros((n, n))
    for w, perm in zip(post, perms):
        for c in range(n):
            m[perm[c], c] += w
    out = []
    for x, y in zip(test.inputs, test.classes.tolist()):
        q = likelihood(task, x)
        q = q / q.sum()
        out.append(_expected_hit(m @ q, y))  # class y's label word is labels[y]
    return torch.tensor(out, dtype=torch.float64)


def one_token_reader(demos: Sequence[tuple[Sequence[str], str]], test: Dataset, labels: Sequence[str]) -> torch.Tensor:
    """The expected accuracy per query of ``test`` of a lookup of one token, the tiny model's
    in-context algorithm: the label that the demonstrations ending in the query's last word carry
    most often (a uniform guess among the tied labels, or among all where no demonstration ends
    in it). ``labels[c]`` is the label word of class ``c``."""
    idx = {w: j for j, w in enumerate(labels)}
    out = []
    for x, y in zip(test.inputs, test.classes.tolist()):
        votes = np.zeros(len(labels))
        for dx, dy in demos:
            if len(dx) and len(x) and dx[-1] == x[-1]:
                votes[idx[dy]] += 1
        out.append(_expected_hit(votes, y) if votes.any() else 1.0 / len(labels))
    return torch.tensor(out, dtype=torch.float64)


def no_cue_probe(
    model: nn.Module,
    name: str,
    cfg: Config,
    seed: int,
    *,
    draws: int = 2,
    k: int | None = None,
    data: tuple[Dataset, Dataset] | None = None,
    codec: Codec = WORDS,
    likelihood: Callable[[Task, Sequence[str]], np.ndarray] = lexicon_likelihood,
) -> dict[str, torch.Tensor]:
    """Does ICL read more than one token? Demonstrations and queries with their cue words taken
    out (:func:`without_cues`) and labelled with nonce words the weights cannot know
    (:func:`probe.nonce_labels`): what is left to go on is the rest of each input, and which
    nonce word goes with which class can only be learned from the demonstrations' words. Over
    ``draws`` random draws of ``k`` demonstrations (default ``cfg.k``; no selection), per query:

    * ``icl``: whether the model's ICL is right (1/0);
    * ``one_token``: the expected accuracy of :func:`one_token_reader`, a lookup of the query's
      last word (the row's null: what the lookup that the tiny model runs keeps);
    * ``whole_input``: the expected accuracy of :func:`mapping_reader`, the best reader of every
      word (the ceiling).

    ``data`` is ``(pool, test)`` (default: the synthetic task's, cue words removed here; a data
    set without cue words is used as it is) and ``likelihood`` what the words say about the
    classes (default: the synthetic lexicons, :func:`lexicon_likelihood`)."""
    if data is None:
        pool = make_dataset(name, cfg.pool, seed, split="train")
        test = make_dataset(name, cfg.n_test, seed, split="test")
    else:
        pool, test = data
    pool, test = without_cues(pool), without_cues(test)
    k = cfg.k if k is None else k
    out = {"icl": [], "one_token": [], "whole_input": []}
    for d in range(draws):
        labels = probe.nonce_labels(test.task, demo_generator(seed, 300 + d), codec.nonce_pool)
        demos = probe.demonstrations(pool, k, demo_generator(seed, 310 + d), labels=labels)
        pred = probe.predict(model, test, demos, labels=labels, codec=codec)
        out["icl"].append((pred == test.classes).double())
        out["one_token"].append(one_token_reader(demos, test, labels))
        out["whole_input"].append(mapping_reader(demos, test, labels, likelihood))
    return {key: torch.cat(v) for key, v in out.items()}


def label_regimes(
    model: nn.Module,
    name: str,
    cfg: Config,
    seed: int,
    data: tuple[Dataset, Dataset] | None = None,
    codec: Codec = WORDS,
    *,
    demos: Sequence[tuple[object, str]] | None = None,
) -> dict[str, Any]:
    """ICL with the demonstrations' labels gold, random (Min et al. 2022: each label drawn
    uniformly from the label words, not a permutation), flipped (Wei et al. 2023: class ``c``
    labelled as class ``c + 1 mod C``) and nonce (a verbalizer of nonce words), and zero-shot,
    all on the same test examples with the same demonstration inputs: ``acc`` (accuracies against
    the true classes, named by the verbalizer actually shown) and ``right`` (per-example
    correctness). Beside them, ``reader``: the same accuracies of a copy-the-closest-demonstration
    reader (the label of the demonstration whose prompt shares the most tokens with the query's,
    ties averaged), a reader that copies labels and knows nothing else.

    ``data`` is ``(pool, test)`` (default: the task's synthetic splits for ``seed``, ``cfg.pool``
    and ``cfg.n_test`` examples); ``demos`` defaults to ``cfg.k`` random demonstrations of the
    pool (demonstration draw ``cfg.demo_seeds[0]``, no selection)."""
    if data is None:
        pool = make_dataset(name, cfg.pool, seed, split="train")
        test = make_dataset(name, cfg.n_test, seed, split="test")
    else:
        pool, test = data
    task = test.task
    if task.name != name:
        raise ValueError(f"data of task {task.name} given for {name!r}")
    if demos is None:
        demos = probe.demonstrations(pool, cfg.k, demo_generator(seed, cfg.demo_seeds[0]))
    n = task.n_classes
    classes = [task.labels.index(y) for _, y in demos]
    gen = demo_generator(seed, 97)
    random = [int(c) for c in torch.randint(n, (len(demos),), generator=gen)]
    nonce = probe.nonce_labels(task, demo_generator(seed, 99), codec.nonce_pool)
    shown = {
        "gold": (classes, task.labels),
        "random": (random, task.labels),
        "flipped": ([(c + 1) % n for c in classes], task.labels),
        "nonce": (classes, nonce),
    }
    right, reader = {}, {}
    # the closest-demonstration reader: token overlap of the query's zero-shot prompt with each
    # demonstration's
    bag = [set(codec.prompt(task, [], x)[0]) for x, _ in demos]
    overlap = torch.tensor([[len(set(codec.prompt(task, [], x)[0]) & b) for b in bag] for x in test.inputs])
    closest = overlap == overlap.max(1, keepdim=True).values  # (n_test, k) the tied closest
    for key, (cls, labels) in shown.items():
        labelled = [(x, labels[c]) for (x, _), c in zip(demos, cls)]
        pred = probe.predict(model, test, labelled, labels=labels, codec=codec)
        right[key] = pred == test.classes
        hit = torch.tensor(cls)[None, :] == test.classes[:, None]  # (n_test, k)
        reader[key] = float(((closest & hit).sum(1) / closest.sum(1)).double().mean())
    right["zero"] = probe.predict(model, test, codec=codec) == test.classes
    return {
        "acc": {key: float(v.float().mean()) for key, v in right.items()},
        "right": right,
        "reader": reader,
        "n": len(test),
    }


def cue_moved(model: nn.Module, name: str, cfg: Config, seed: int) -> TaskRun:
    """The protocol (accuracies only) on task ``name`` with the cue word at a random position
    before the input's end, which pretraining never showed (three demonstration seeds, every
    fourth learning rate of the grid: the question is ICL's accuracy, FT's is context)."""
    data = tuple(
        make_dataset(name, n, seed, split=split, cue_last=False)
        for n, split in ((cfg.pool, "train"), (cfg.n_dev, "dev"), (cfg.n_test, "test"))
    )
    return run_task(model, name, sparse_search(cfg, 4), seed, record=False, select_on_test=False, data=data)


# ---------------------------------------------------------------------------------------------
# Momentum attention (the paper's section 6): the shipped models pretrained with and without it
# ---------------------------------------------------------------------------------------------


def momentum_study(
    folder: Path | str,
    held_out: torch.Tensor,
    pools: Mapping[str, tuple[Dataset, Dataset]],
    k: int,
    demo_generator: Callable[[], torch.Generator],
    ppl_lengths: Sequence[int],
) -> list[dict[str, Any]]:
    """Read every model shipped under ``folder`` (one subfolder per momentum and seed): its
    perplexity on the ``held_out`` pretraining episodes (at the full length, and at each of
    ``ppl_lengths``, the paper's Table 6 split), its label accuracy with 1-3 examples before the
    label, its ICL accuracy over ``pools`` (``{task: (demonstration pool, test set)}``, ``k``
    demonstrations drawn from one fresh ``demo_generator()`` per model, task after task), and
    the pretraining step at which label accuracy with >= 9 examples first reached 0.8 (NaN if
    never). One dict per model, with ``eta`` (the momentum), ``seed`` and the training record's
    ``evals``."""
    rows = []
    full = held_out.shape[1] - 1
    for sub in sorted(Path(folder).iterdir()):
        m, rec = load_shipped(sub)
        with torch.no_grad():
            logits = m(held_out[:, :-1])  # one pass read twice
        ppl_at = perplexity_by_length(m, held_out, tuple(ppl_lengths), logits=logits)
        few = label_accuracy_by_context(m, held_out, logits=logits)["acc_1_3"]
        gdemo = demo_generator()
        icl = np.mean(
            [
                probe.accuracy(probe.predict(m, test, probe.demonstrations(pool, k, gdemo)), test)
                for pool, test in pools.values()
            ]
        )
        cliff = next((e["step"] for e in rec["evals"] if e["acc_9_99"] >= 0.8), float("nan"))
        rows.append(
            {
                "eta": rec["model"]["momentum"],
                "seed": rec["pretrain"]["seed"],
                "ppl": ppl_at[full],
                "ppl_at": ppl_at,
                "few": few,
                "icl": float(icl),
                "cliff": cliff,
                "evals": rec["evals"],
            }
        )
    return rows


def spread(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float, float]:
    """Mean, smallest and largest value of ``key`` over ``rows`` (e.g. the seeds of one setting)."""
    v = np.array([r[key] for r in rows], dtype=float)
    if v.size == 0:
        raise ValueError(f"no rows to read {key!r} from")
    return float(v.mean()), float(v.min()), float(v.max())


def momentum_effects(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("ppl", "icl"), lower_is_better: Sequence[str] = ("ppl",)
) -> dict[str, dict]:
    """What decides the momentum rows, from :func:`momentum_study`'s ``rows``: per ``key``,

    * ``base``: the values of the models without momentum (``eta`` 0), an array over their seeds;
    * ``spread``: the largest range between the seeds of one ``eta`` (over every ``eta``);
    * ``gain``: ``{eta: mean over its seeds - mean of base}`` for every ``eta > 0``;
    * ``beyond``: the ``eta`` whose gain improves on the baseline (lowers the keys of
      ``lower_is_better``, raises the others) by more than ``spread``: an effect that the seeds
      alone cannot explain."""
    etas = sorted({r["eta"] for r in rows})
    if 0.0 not in etas or len(etas) < 2:
        raise ValueError(f"need models with eta = 0 and with some eta > 0, got eta in {etas}")
    by_eta = {e: [r for r in rows if r["eta"] == e] for e in etas}
    base = {k: np.array([r[k] for r in by_eta[0.0]], dtype=float) for k in keys}
    spread = {k: max(np.ptp([r[k] for r in by_eta[e]]) for e in etas) for k in keys}
    gain = {k: {e: float(np.mean([r[k] for r in by_eta[e]]) - base[k].mean()) for e in etas if e > 0} for k in keys}
    beyond = {k: [e for e, g in gain[k].items() if (-g if k in lower_is_better else g) > spread[k]] for k in keys}
    return {"base": base, "spread": spread, "gain": gain, "beyond": beyond}
