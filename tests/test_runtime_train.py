"""Unit tests of iclbook.runtime, iclbook.train and iclbook.plots (the ledger: test_ledger.py)."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from iclbook import contextual as cx  # noqa: E402
from iclbook import plots, runtime, train  # noqa: E402

# --- runtime -----------------------------------------------------------------------------------


def test_profile_and_seed_from_environment(monkeypatch):
    monkeypatch.delenv("ICLBOOK_PROFILE", raising=False)
    monkeypatch.delenv("ICLBOOK_SEED", raising=False)
    assert runtime.profile() == "book" and runtime.seed() == 0
    monkeypatch.setenv("ICLBOOK_PROFILE", " Smoke ")
    monkeypatch.setenv("ICLBOOK_SEED", "7")
    assert runtime.profile() == "smoke" and runtime.seed() == 7
    monkeypatch.setenv("ICLBOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="ICLBOOK_PROFILE"):
        runtime.profile()
    monkeypatch.setenv("ICLBOOK_SEED", "seven")
    with pytest.raises(ValueError, match="ICLBOOK_SEED"):
        runtime.seed()
    monkeypatch.setenv("ICLBOOK_SEED", "-1")
    with pytest.raises(ValueError):
        runtime.seed()


def test_device(monkeypatch):
    monkeypatch.delenv("ICLBOOK_DEVICE", raising=False)
    assert runtime.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("ICLBOOK_DEVICE", "cpu")
    assert runtime.device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("ICLBOOK_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA"):
            runtime.device()


def test_seed_everything_is_deterministic():
    g1 = runtime.seed_everything(3)
    a, ga = torch.randn(4), torch.randn(4, generator=g1)
    g2 = runtime.seed_everything(3)
    assert torch.equal(a, torch.randn(4)) and torch.equal(ga, torch.randn(4, generator=g2))


def test_weight_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_CACHE", str(tmp_path))
    monkeypatch.delenv("ICLBOOK_RETRAIN", raising=False)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(3.0)}, {"loss": [1.0, 0.5]}

    s1, h1, hit1 = runtime.cached("99", "toy", {"a": 1}, build, seed=0)
    s2, h2, hit2 = runtime.cached("99", "toy", {"a": 1}, build, seed=0)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert torch.equal(s1["w"], s2["w"]) and h1 == h2
    runtime.cached("99", "toy", {"a": 2}, build, seed=0)  # another config: another entry
    runtime.cached("99", "toy", {"a": 1}, build, seed=1)  # another seed: another entry
    assert len(calls) == 3
    monkeypatch.setenv("ICLBOOK_RETRAIN", "1")
    assert runtime.cached("99", "toy", {"a": 1}, build, seed=0)[2] is False
    assert len(calls) == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_key_follows_the_trained_config_not_the_profile_name(monkeypatch):
    """Two profiles whose trained fields differ key different weights; the profile's name alone
    changes no weight, so it is not in the key (and a profile that trains the same as another
    shares its weights)."""
    monkeypatch.setenv("ICLBOOK_PROFILE", "smoke")
    k1 = runtime.cache_key("04", "m", cx.CONFIGS["smoke"])
    assert k1 != runtime.cache_key("04", "m", cx.CONFIGS["book"])
    monkeypatch.setenv("ICLBOOK_PROFILE", "book")
    assert k1 == runtime.cache_key("04", "m", cx.CONFIGS["smoke"])


# --- train -------------------------------------------------------------------------------------


class Linear(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(3, 1, dtype=torch.float64)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


W_TRUE = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def sample(g):
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    return x, x @ W_TRUE


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_train_single_model_learns_and_logs():
    model = Linear(0)
    seen = []
    hist = train.train(
        model,
        loss_fn,
        sample,
        steps=200,
        lr=0.05,
        generators=runtime.generator(0),
        log_every=20,
        checkpoint_every=50,
        on_checkpoint=lambda step, ms: seen.append(step) or {"w0": ms[0].lin.weight[0, 0].item()},
    )
    assert hist["step"] == list(range(20, 201, 20))
    assert hist["loss"][-1][0] < 1e-3 < hist["loss"][0][0]
    assert seen == [0, 50, 100, 150, 200]
    assert [c["step"] for c in hist["checkpoints"]] == seen


def test_ensemble_equals_separate_runs():
    """A batched ensemble follows, member by member, the path each model follows alone."""
    seeds = [1, 2, 3]
    alone = []
    for s in seeds:
        m = Linear(s)
        train.train(m, loss_fn, sample, steps=30, lr=0.01, generators=runtime.generator(10 + s))
        alone.append(m.lin.weight.detach().clone())
    members = [Linear(s) for s in seeds]
    hist = train.train(
        members, loss_fn, sample, steps=30, lr=0.01, generators=[runtime.generator(10 + s) for s in seeds], log_every=5
    )
    for m, ref in zip(members, alone):
        assert torch.allclose(m.lin.weight, ref, atol=1e-10)
    assert len(hist["loss"][0]) == 3 and hist["members"] == 3


def test_ensemble_of_blocks_equals_separate_runs():
    cfg = dataclasses.replace(cx.CONFIGS["smoke"], N=6, width=8, batch=4)

    def sample_prompts(g):
        return cx.sample_prompts(cfg.batch, N=cfg.N, d=cfg.d, generator=g)

    single = cx.make_block("softmax", cfg, seed=1)
    train.train(single, cx.mse, sample_prompts, steps=5, lr=1e-2, generators=runtime.generator(5))
    pair = [cx.make_block("softmax", cfg, seed=1), cx.make_block("softmax", cfg, seed=2)]
    train.train(pair, cx.mse, sample_prompts, steps=5, lr=1e-2, generators=[runtime.generator(5), runtime.generator(6)])
    for a, b in zip(single.parameters(), pair[0].parameters()):
        assert torch.allclose(a, b, atol=1e-10)


def test_stack_and_load_states():
    members = [Linear(1), Linear(2)]
    state = train.stack_states(members)
    fresh = [Linear(5), Linear(6)]
    train.load_stacked(fresh, state)
    for a, b in zip(members, fresh):
        assert torch.equal(a.lin.weight, b.lin.weight)


def test_train_bad_arguments():
    m = Linear(0)
    with pytest.raises(ValueError, match="generator"):
        train.train([m, Linear(1)], loss_fn, sample, steps=1, lr=0.1, generators=runtime.generator(0))
    with pytest.raises(ValueError, match="learning rate"):
        train.train(m, loss_fn, sample, steps=1, lr=0.0, generators=runtime.generator(0))
    with pytest.raises(ValueError, match="optimizer"):
        train.train(m, loss_fn, sample, steps=1, lr=0.1, generators=runtime.generator(0), optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps"):
        train.train(m, loss_fn, sample, steps=-1, lr=0.1, generators=runtime.generator(0))
    with pytest.raises(ValueError, match="architecture"):
        train.train(
            [m, cx.make_block("softmax", cx.CONFIGS["smoke"], seed=0)],
            loss_fn,
            sample,
            steps=1,
            lr=0.1,
            generators=[runtime.generator(0)] * 2,
        )


def test_train_stops_on_nan():
    def bad_loss(model, batch):
        return loss_fn(model, batch) * float("nan")

    with pytest.raises(FloatingPointError):
        train.train(Linear(0), bad_loss, sample, steps=3, lr=0.1, generators=runtime.generator(0))


def test_sgd_weight_decay_is_coupled():
    p = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = train.make_optimizer("sgd", [p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((2,), 0.95, dtype=torch.float64))


# --- plots --------------------------------------------------------------------------------


def test_plots_band_and_style():
    plots.set_style()
    fig, ax = plt.subplots()
    x = np.arange(5)
    ys = np.random.default_rng(0).normal(size=(3, 5))
    half = {"se": ys.std(0, ddof=1) / np.sqrt(3), "sd": ys.std(0, ddof=1)}
    for spread in ("se", "sd", "minmax"):
        plots.band(ax, x, ys, spread=spread, label=spread)
        assert np.allclose(ax.lines[-1].get_ydata(), ys.mean(0))  # the line is the mean over runs
        band_y = ax.collections[-1].get_paths()[0].vertices[:, 1]
        lo, hi = (
            (ys.min(0), ys.max(0)) if spread == "minmax" else (ys.mean(0) - half[spread], ys.mean(0) + half[spread])
        )
        assert np.isclose(band_y.min(), lo.min()) and np.isclose(band_y.max(), hi.max())
    with pytest.raises(ValueError):
        plots.band(ax, x, np.zeros((2, 4)))
    with pytest.raises(ValueError):
        plots.band(ax, x, np.zeros((2, 5)), spread="iqr")
    plots.attention_map(ax, np.eye(3) / 1.0)
    plt.close(fig)
    assert len(set(plots.colors(4))) == 4  # four distinct colours


def test_cosine_schedule_and_bad_schedule():
    m = Linear(0)
    hist = train.train(
        m, loss_fn, sample, steps=100, lr=0.05, generators=runtime.generator(0), schedule="cosine", log_every=50
    )
    assert hist["loss"][-1][0] < hist["loss"][0][0]

    # the schedule itself: with a constant gradient, plain SGD moves a weight by the sum of the
    # step sizes, lr * T under "constant" and lr * (T + 1) / 2 under the half cosine
    class Slope(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def linear(model, batch):
        return model.w * 1.0

    T, lr = 40, 0.1
    moved = {}
    for schedule in ("constant", "cosine"):
        m = Slope()
        train.train(
            m,
            linear,
            lambda g: (torch.zeros(1),),
            steps=T,
            lr=lr,
            optimizer="sgd",
            generators=runtime.generator(0),
            schedule=schedule,
        )
        moved[schedule] = -float(m.w.detach())
    assert moved["constant"] == pytest.approx(lr * T, rel=1e-9)
    assert moved["cosine"] == pytest.approx(lr * (T + 1) / 2, rel=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        train.train(m, loss_fn, sample, steps=1, lr=0.1, generators=runtime.generator(0), schedule="step")


def test_per_member_samplers():
    """Members of one ensemble can draw from different distributions (a sweep of configs)."""

    def scaled(k):
        return lambda g: (lambda x, y: (x, k * y))(*sample(g))

    members = [Linear(0), Linear(0)]
    train.train(
        members,
        loss_fn,
        [scaled(1.0), scaled(-1.0)],
        steps=300,
        lr=0.05,
        generators=[runtime.generator(1), runtime.generator(2)],
    )
    w0, w1 = members[0].lin.weight.detach()[0], members[1].lin.weight.detach()[0]
    assert torch.allclose(w0, W_TRUE, atol=0.05) and torch.allclose(w1, -W_TRUE, atol=0.05)
    with pytest.raises(ValueError, match="sampler"):
        train.train(
            members, loss_fn, [sample], steps=1, lr=0.1, generators=[runtime.generator(1), runtime.generator(2)]
        )


def test_cached_training_loads_weights_on_a_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLBOOK_CACHE", str(tmp_path))
    monkeypatch.delenv("ICLBOOK_RETRAIN", raising=False)

    def fit(models):
        return lambda: train.train(
            models, loss_fn, sample, steps=20, lr=0.05, generators=[runtime.generator(i) for i in range(len(models))]
        )

    first = [Linear(0), Linear(1)]
    h1 = train.cached_training("99", "toy", {"k": 1}, first, fit(first), steps=20)
    again = [Linear(0), Linear(1)]
    h2 = train.cached_training("99", "toy", {"k": 1}, again, fit(again), steps=20)
    assert (h1["cached"], h2["cached"]) == (False, True)
    for a, b in zip(first, again):
        assert torch.equal(a.lin.weight, b.lin.weight)
    assert h1["loss"] == h2["loss"]


# --- param groups: another optimizer for some parameters -------------------------------------


@pytest.mark.parametrize("members", [1, 2])
def test_param_groups_use_their_own_optimizer(members):
    """A group on plain SGD moves exactly by -lr * grad while the rest follows Adam."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)) for _ in range(members)]
    start = [[p.detach().clone() for p in m.parameters()] for m in models]
    x = torch.randn(8, 2)

    def loss_fn(model, batch):
        return (model(batch[0]) ** 2).mean()

    grads = []
    for m in models:
        m.zero_grad()
        loss_fn(m, (x,)).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    train.train(
        models if members > 1 else models[0],
        loss_fn,
        lambda g: (x,),
        steps=1,
        lr=0.1,
        generators=[torch.Generator() for _ in models] if members > 1 else torch.Generator(),
        optimizer="adam",
        param_groups={"1": {"optimizer": "sgd", "lr": 0.5}},
    )
    for m, s0, g in zip(models, start, grads):
        ps = list(m.parameters())
        for k in (2, 3):  # the second layer: SGD at 0.5
            assert torch.allclose(ps[k].detach(), s0[k] - 0.5 * g[k], atol=1e-6)
        for k in (0, 1):  # the first layer: Adam's first step moves each entry by lr (sign of grad)
            assert torch.allclose(ps[k].detach(), s0[k] - 0.1 * torch.sign(g[k]), atol=1e-5)


def test_param_groups_bad_names():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="match no parameter"):
        train.train(
            model,
            lambda m, b: m(b[0]).sum(),
            lambda g: (torch.ones(1, 2),),
            steps=1,
            lr=0.1,
            generators=torch.Generator(),
            param_groups={"mlp": {"lr": 1.0}},
        )
    with pytest.raises(ValueError, match="unknown keys"):
        train.train(
            model,
            lambda m, b: m(b[0]).sum(),
            lambda g: (torch.ones(1, 2),),
            steps=1,
            lr=0.1,
            generators=torch.Generator(),
            param_groups={"weight": {"rate": 1.0}},
        )


def test_threads_context_restores_the_count():
    import torch

    from iclbook import runtime

    before = torch.get_num_threads()
    with runtime.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with runtime.threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with runtime.threads(0):
            pass
