"""Every model reads its internals one way: ``model.internals(x)`` returns the names its
``INTERNALS`` documents, with the documented shapes, and they are the activations of the
model's own forward pass (the output among them equals ``model(x)``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iclbook import contextual as cx
from iclbook import induction as ih
from iclbook import internals, runtime
from iclbook import patterns as pt
from iclbook.implicit import data, probe
from iclbook.implicit.model import LMConfig, TinyLM

P_CFG = pt.CONFIGS["smoke"]
I_CFG = replace(ih.CONFIGS["book"], K=64, L=8, N=4, D=15, Nmax=8, K_c=16, n_eval=20)
C_CFG = replace(cx.CONFIGS["smoke"], N=6, width=16)


def _one_layer():
    prompts = pt.sample_prompts(
        pt.in_domain(P_CFG, "train"), 5, alpha=0.8, l=7, cfg=P_CFG, generator=runtime.generator(0)
    )
    return pt.OneLayerICL(P_CFG, seed=0), prompts.tokens, "output", {"attention": (5, 7), "hidden": (5, P_CFG.m)}


def _induction(net):
    seqs = ih.sample(ih.make_task(I_CFG, runtime.generator(0)), 5, I_CFG, runtime.generator(1))
    T = seqs.tokens.shape[1]
    model = net(I_CFG, runtime.generator(2))
    shapes = {"att2": (5, T if net is ih.InductionNet else I_CFG.N), "logits": (5, I_CFG.L)}
    if net is ih.InductionNet:
        shapes["att1"] = (5, T, T)
    return model, seqs.tokens, "logits", shapes


def _block():
    tokens, _ = cx.sample_prompts(5, N=C_CFG.N, d=C_CFG.d, generator=torch.Generator().manual_seed(0))
    block = cx.make_block("softmax", C_CFG, "skip", seed=0)
    return (
        block,
        tokens,
        "prediction",
        {"mlp_input": (5, block.layer.d_out), "pre": (5, C_CFG.width), "output": (5, block.d_model)},
    )


def _tiny_lm():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyLM(LMConfig(layers=2)).eval()
    ids = torch.randint(len(data.VOCAB), (3, 11), generator=torch.Generator().manual_seed(0))
    d = model.cfg.d_model
    return model, ids, "logits", {"q": (2, 3, 11, d), "out": (2, 3, 11, d)}


def _small_gpt():
    _, tokens, _, _ = _one_layer()
    model = pt.SmallGPT(P_CFG, seed=0, layers=2, heads=2, width=16).eval()
    return model, tokens, "output", {"blocks": (2, 5, 8, 16), "final": (5, 16)}


CASES = {
    "OneLayerICL": _one_layer,
    "SmallGPT": _small_gpt,
    "InductionNet": lambda: _induction(ih.InductionNet),
    "MinimalNet": lambda: _induction(ih.MinimalNet),
    "ContextualBlock": _block,
    "TinyLM": _tiny_lm,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_internals_are_the_documented_names_and_the_forward_pass(name):
    model, x, output, shapes = CASES[name]()
    acts = model.internals(x)
    assert set(acts) == set(type(model).INTERNALS)
    for key, shape in shapes.items():
        assert tuple(acts[key].shape) == shape, key
    with torch.no_grad():
        assert torch.allclose(acts[output], model(x), atol=1e-6)  # the same pass, not a re-derivation


def test_attention_rows_are_distributions():
    model, x, _, _ = _induction(ih.InductionNet)
    att1, att2 = internals.read(model, x, "att1", "att2")
    assert torch.allclose(att1.sum(-1), torch.ones(att1.shape[:2]), atol=1e-6)
    assert torch.allclose(att2.sum(-1), torch.ones(att2.shape[0]), atol=1e-6)
    assert torch.equal(att1.triu(1), torch.zeros_like(att1))  # causal
    model, x, _, _ = _one_layer()
    assert torch.allclose(internals.read(model, x, "attention").sum(-1), torch.ones(x.shape[0]), atol=1e-6)


def test_tiny_lm_internals_are_its_projections():
    model, ids, _, _ = _tiny_lm()
    acts = model.internals(ids)
    mods = [m for _, m in probe.attention_modules(model)]
    with torch.no_grad():
        assert torch.allclose(mods[1].q_proj(acts["x"][1]), acts["q"][1], atol=1e-6)
        assert torch.allclose(mods[0].k_proj(acts["x"][0]), acts["k"][0], atol=1e-6)
        assert not torch.allclose(acts["x"][0], acts["x"][1])  # each layer's own input


def test_read_names_what_a_model_has():
    model, x, _, _ = _block()
    with pytest.raises(KeyError, match="has no internals \\['attention'\\]; it has"):
        internals.read(model, x, "attention")
    with pytest.raises(TypeError, match="documents no INTERNALS"):
        internals.read(torch.nn.Linear(2, 2), torch.zeros(1, 2), "x")
