"""Device hygiene without a GPU: every model of the book built on PyTorch's ``meta`` device.

A tensor made without ``device=`` inside a forward pass, a sampler or a metric works on a CPU and
crashes on CUDA ("Expected all tensors to be on the same device"). The ``meta`` device catches most
of these on a CPU: an operation that mixes a meta tensor with a CPU tensor raises. So each model
is moved to ``meta`` and run forward and backward on a meta batch, an optimiser steps, and its
named internals are read; the training loop's batched-ensemble path runs on meta too. Nothing here
computes a number: meta tensors have shapes and no values."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iclbook import induction as ih
from iclbook import internals, lenses, patterns, train
from iclbook.contextual import layers as cl
from iclbook.contextual.model import BlockStack, ContextualBlock
from iclbook.implicit.model import LMConfig, TinyLM

META = torch.device("meta")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def meta_batch(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device=META)


PAT = patterns.CONFIGS["smoke"]
IND = replace(ih.CONFIGS["smoke"], K=64, L=8, N=4, D=15, Nmax=8, K_c=16)


def _pattern_tokens() -> torch.Tensor:
    return meta_batch(5, 4, PAT.d)  # (n, l + 1, d): three contexts and the query


def _induction_tokens() -> torch.Tensor:
    real = ih.eval_sets(ih.make_task(IND, gen(0)), IND, gen(1))["IC"].tokens  # for its shape
    return meta_batch(5, *real.shape[1:])


# name: (model factory, meta inputs, the scalar a loss reads from the output)
MODELS = {
    "ch1 OneLayerICL": (lambda: patterns.OneLayerICL(PAT, 0), lambda: (_pattern_tokens(),), lambda out: out.sum()),
    "ch1 SmallGPT": (
        lambda: patterns.SmallGPT(PAT, 0, layers=2, heads=2, width=16),
        lambda: (_pattern_tokens(),),
        lambda out: out.sum(),
    ),
    "ch2 TinyLM (ALiBi)": (
        lambda: TinyLM(LMConfig(d_model=16, heads=2, layers=2, d_ff=32, max_len=32)),
        lambda: (meta_batch(2, 12, dtype=torch.long),),
        lambda out: out.sum(),
    ),
    "ch2 TinyLM (momentum, sinusoidal)": (
        lambda: TinyLM(
            LMConfig(d_model=16, heads=2, layers=1, d_ff=32, max_len=32, momentum=0.5, positions="sinusoidal")
        ),
        lambda: (meta_batch(2, 12, dtype=torch.long),),
        lambda out: out.sum(),
    ),
    "ch3 InductionNet": (lambda: ih.InductionNet(IND, gen()), lambda: (_induction_tokens(),), lambda out: out.sum()),
    "ch3 MinimalNet": (lambda: ih.MinimalNet(IND, gen()), lambda: (_induction_tokens(),), lambda out: out.sum()),
}
for _name, _layer in {
    "softmax attention": lambda: cl.SoftmaxAttention(6, heads=2, d_k=3),
    "windowed attention": lambda: cl.SoftmaxAttention(6, heads=2, d_k=3, window=2),
    "linear attention": lambda: cl.LinearAttention(6, heads=2, d_k=3),
    "tanh RNN": lambda: cl.TanhRNN(6, hidden=6),
    "GRU": lambda: cl.GRU(6, hidden=6),
    "diagonal SSM": lambda: cl.DiagonalSSM(6, state=6),
}.items():
    for _variant in ("plain", "skip", "preln"):
        MODELS[f"ch4 ContextualBlock ({_name}, {_variant})"] = (
            lambda layer=_layer, variant=_variant: ContextualBlock(layer(), width=8, variant=variant),
            lambda: (meta_batch(3, 5, 6),),
            lambda out: out.sum(),
        )
MODELS["ch4 BlockStack"] = (
    lambda: BlockStack(
        [ContextualBlock(cl.SoftmaxAttention(6, heads=2, d_k=3), width=8, variant="preln") for _ in range(2)]
    ),
    lambda: (meta_batch(3, 5, 6),),
    lambda out: out.sum(),
)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_forward_backward_and_a_step_on_meta(name):
    make, inputs, scalar = MODELS[name]
    torch.manual_seed(0)
    model = make().to(META)
    args = inputs()
    out = model(*args)
    assert out.device == META, f"{name}: output on {out.device}"
    scalar(out).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and p.grad.device == META for p in params)
    for opt in (torch.optim.Adam(params, lr=1e-3), torch.optim.SGD(params, lr=1e-3)):
        opt.step()
    assert all(p.device == META for p in model.parameters())
    names = list(getattr(model, "INTERNALS", {}))
    if names:
        with torch.no_grad():
            read = internals.read(model, args[0], *names)
        read = read if isinstance(read, tuple) else (read,)
        assert all(t.device == META for t in read), f"{name}: an internal is not on meta"


def test_the_induction_nets_direct_form_and_attention_follow_the_device():
    model = ih.InductionNet(IND, gen()).to(META)
    tokens = _induction_tokens()
    with torch.no_grad():
        logits, maps = model.direct(tokens)
        assert logits.device == META and all(m.device == META for m in maps)
        att1, att2 = model.attention(tokens)
        assert att1.device == att2.device == META
        part = lenses.layer2(model, tokens)
        assert part.a_full.device == part.a_alone.device == META


def test_the_batched_ensemble_trains_on_meta():
    models = [patterns.OneLayerICL(PAT, s).to(META) for s in (0, 1)]

    def sample(g: torch.Generator):
        return _pattern_tokens(), meta_batch(5)

    def loss(model, batch):
        tokens, y = batch
        return (model(tokens) - y).pow(2).mean()

    history = train.train(models, loss, sample, steps=2, lr=1e-3, generators=[gen(0), gen(1)], log_every=1)
    assert history["step"] == [1, 2]
    assert all(p.device == META for m in models for p in m.parameters())


def test_the_measures_that_run_on_a_models_device_follow_it():
    """Chapters 3 and 5 run on ``runtime.device()``: every function they apply to a model's
    tensors must return them on that device. Random draws come from CPU generators (the same
    draws on every device) and are moved."""
    from iclbook.implicit import dual_form, metrics

    norms = meta_batch(12)
    for how in ("magnitude", "largest", "random"):
        assert patterns.pruning_mask(norms, 0.25, how, gen()).device == META
    assert patterns.large_group(norms, 3).device == META
    h = meta_batch(4, 6)
    assert metrics.simaou_random(h, h, gen()).device == META
    assert metrics.simaou(h, h, h).device == META
    keys, values, queries = meta_batch(3, 6, 7), meta_batch(3, 6, 7), meta_batch(3, 6, 1)
    out = dual_form.relaxed_icl(meta_batch(6, 6), meta_batch(6, 6), keys, queries, meta_batch(3, 6))
    assert all(t.device == META for t in out.values())
    del values
    model = patterns.OneLayerICL(PAT, 0).to(META)
    geometry = patterns.neuron_geometry(model, PAT)
    assert all(t.device == META for t in geometry.values())


def test_the_lenses_query_swap_follows_the_device():
    seqs = ih.eval_sets(ih.make_task(IND, gen(0)), IND, gen(1))["IC"]
    on_meta = seqs.map(lambda t: t.to(META))
    tokens, labels = lenses.repeat_query(on_meta)
    assert tokens.device == labels.device == META


def test_the_samplers_draw_on_the_cpu_whatever_the_models_device():
    """The contract that keeps data identical on every device: samplers draw with CPU generators
    on the CPU, and a chapter moves a batch to its model's device (chapter 3's training does,
    ``.to(device)`` per batch). A sampler that drew on the model's device would give a GPU run
    other data than a CPU run of the same seed."""
    prompts = patterns.sample_prompts(
        patterns.in_domain(PAT, "train"), 4, alpha=PAT.alpha, l=3, cfg=PAT, generator=gen()
    )
    assert all(t.device.type == "cpu" for t in prompts.batch())
    seqs = ih.sample(ih.make_task(IND, gen(0)), 4, IND, gen(1))
    assert seqs.tokens.device.type == seqs.target.device.type == "cpu"
    moved = seqs.map(lambda t: t.to(META))
    assert moved.tokens.device == moved.target.device == META
    from iclbook.contextual import data as cxd
    from iclbook.implicit import data as imd

    tokens, target = cxd.sample_prompts(3, N=4, d=2, generator=gen())
    assert tokens.device.type == target.device.type == "cpu"
    assert imd.pretraining_batch(2, 16, gen()).device.type == "cpu"


def test_the_lenses_label_shuffle_follows_the_device():
    labels = torch.arange(8).reshape(2, 4)
    on_cpu = lenses.shuffle_rows(labels, gen(3))
    assert sorted(on_cpu[0].tolist()) == [0, 1, 2, 3] and sorted(on_cpu[1].tolist()) == [4, 5, 6, 7]
    assert lenses.shuffle_rows(labels.to(META), gen(3)).device == META
