"""Chapter 1's measurements of trained models, as functions that return numbers: errors and the
sweeps over S1 and the context length (Theorems 1-2), the Q/K projections and the neurons'
geometry (Propositions 1-2), pruning and the lucky neurons (Theorem 3), and the rules that turn
these numbers into the values the chapter's ledger rows judge.

Shapes: ``n`` prompts, ``l`` contexts, ``d`` token size, ``m`` neurons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from iclbook import internals
from iclbook.patterns.config import Config
from iclbook.patterns.data import Domain, Prompts, in_domain, out_of_domain, sample_prompts
from iclbook.patterns.model import PARAMS, OneLayerICL, hinge_loss, stacked_margins

# ---------------------------------------------------------------------------------------------
# Errors and the out-of-domain and context-length sweeps (Theorems 1-2)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def error(model: torch.nn.Module, prompts: Prompts) -> float:
    """Classification error ``P(sign F != z)`` alone (what :func:`evaluate` reports, without
    the attention pass): for evaluations inside a training loop."""
    return float((torch.sign(model(prompts.tokens)) != prompts.target).float().mean())


@torch.no_grad()
def stacked_errors(models: Sequence[OneLayerICL], prompts: Prompts) -> list[float]:
    """:func:`error` of each of ``models`` on the same ``prompts``, from one batched pass over
    their stacked weights (:func:`~iclbook.patterns.model.stacked_margins`)."""
    if not models:
        return []
    W = {n: torch.stack([getattr(m, n) for m in models]) for n in PARAMS}
    F = stacked_margins(W, models[0].a, prompts.tokens)
    return (torch.sign(F) != prompts.target).float().mean(-1).tolist()


@torch.no_grad()
def evaluate(model: OneLayerICL, prompts: Prompts, neuron_mask: torch.Tensor | None = None) -> dict:
    """Classification error ``P(sign F != z)`` (``F = 0`` counts as wrong), hinge loss, and the
    attention mass on contexts that share the query's relevant pattern."""
    with internals.recording(model) as acts:  # the attention of the same pass (the same numbers as model.attention)
        F = model(prompts.tokens, neuron_mask)
    att = acts["attention"]
    return {
        "error": float((torch.sign(F) != prompts.target).float().mean()),
        "hinge": float(hinge_loss(F, prompts.target)),
        "same_attention": float(same_pattern_attention(att, prompts.same).mean()),
    }


def same_pattern_attention(att: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """The query's attention mass on the contexts that share its relevant pattern: ``att``
    ``(n, l)`` (each row sums to 1), ``same`` ``(n, l)`` booleans; returns ``(n,)``."""
    return (att * same.to(att.dtype)).sum(-1)


def ood_sweep(
    models: Sequence[torch.nn.Module],
    cfg: Config,
    S1_values: Sequence[float],
    *,
    domain_generator: Callable[[], torch.Generator],
    prompt_generator: Callable[[], torch.Generator],
    n: int,
    construction: str = "pair",
    norm: float = 1.0,
    alpha: float = 0.8,
) -> np.ndarray:
    """``(models, S1)`` error on out-of-domain prompts (Theorem 2): for each ``S1``, patterns of
    that construction, then ``n`` prompts at ``alpha`` and the training length.
    ``domain_generator()`` and ``prompt_generator()`` return fresh generators, so every ``S1``
    (and every model: the one-layer ones and the GPT) sees the same draws. ``norm`` is the
    pattern norm of the ``"unit"`` construction (:func:`~iclbook.patterns.data.ood_coefficients`)."""
    out = np.zeros((len(models), len(S1_values)))
    for j, S1 in enumerate(S1_values):
        dom = out_of_domain(cfg, S1, domain_generator(), construction, norm)
        prompts = sample_prompts(dom, n, alpha=alpha, l=cfg.l_train, cfg=cfg, generator=prompt_generator())
        out[:, j] = errors(models, prompts)
    return out


def errors(models: Sequence[torch.nn.Module | Callable[[Prompts], float]], prompts: Prompts) -> list[float]:
    """Each model's error on ``prompts``: :func:`error` of a network (the one-layer models read as
    one stack, :func:`stacked_errors`), or what a reader of prompts returns."""
    one_layer = [i for i, m in enumerate(models) if isinstance(m, OneLayerICL)]
    out = [0.0] * len(models)
    for i, e in zip(one_layer, stacked_errors([models[i] for i in one_layer], prompts)):
        out[i] = e
    for i, m in enumerate(models):
        if i not in one_layer:
            out[i] = error(m, prompts) if isinstance(m, torch.nn.Module) else m(prompts)
    return out


def length_sweep(
    models: Sequence[torch.nn.Module | Callable[[Prompts], float]],
    domain: Domain,
    cfg: Config,
    alphas: Sequence[float],
    lengths: Sequence[int],
    *,
    n: int,
    prompt_generator: Callable[[], torch.Generator],
) -> np.ndarray:
    """``(alphas, models, lengths)`` error against the context length ``l`` (Theorems 1-2's
    ``l = Omega(1 / alpha')``): ``n`` prompts of ``domain`` per point, each from a fresh
    ``prompt_generator()``. A model is a network (its :func:`error`) or any reader of prompts
    that returns its error (an untrained k-NN, :func:`~iclbook.patterns.nulls.knn_length_sweep`)."""
    out = np.zeros((len(alphas), len(models), len(lengths)))
    for i, a in enumerate(alphas):
        for k, l in enumerate(lengths):
            prompts = sample_prompts(domain, n, alpha=a, l=int(l), cfg=cfg, generator=prompt_generator())
            out[i, :, k] = errors(models, prompts)
    return out


def first_below(lengths: Sequence[float], errors: Sequence[float], level: float = 0.01) -> float:
    """The first of ``lengths`` at which ``errors`` (one per length) is below ``level``, NaN if
    none is: the length a learner needs, read off an error-vs-length curve."""
    below = np.asarray(errors) < level
    return float(np.asarray(lengths)[np.argmax(below)]) if below.any() else np.nan


# ---------------------------------------------------------------------------------------------
# The mechanism (Propositions 1-2)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def qk_projections(model: OneLayerICL, prompts: Prompts, domain: Domain, cfg: Config) -> dict:
    """Mean norms of ``W_Q p_q`` and ``W_K p_i`` and of their components along the query's
    relevant pattern (Prop. 1: the growth is along the pattern)."""
    tokens = prompts.tokens
    n, l, d = tokens[:, :-1].shape
    # one matrix product over every context (a product over the strided view runs one tiny product per prompt)
    q, k = tokens[:, -1] @ model.W_Q.T, (tokens[:, :-1].reshape(n * l, d) @ model.W_K.T).view(n, l, -1)
    # the query's pattern direction, embedded in token space
    xq = tokens[:, -1, : cfg.d_X]
    sims = xq @ domain.relevant.T  # (n, M)
    direction = torch.zeros_like(tokens[:, -1])
    direction[:, : cfg.d_X] = domain.relevant[sims.argmax(-1)]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    same_k = (k * direction[:, None]).sum(-1)[prompts.same]
    return {
        "q_norm": float(q.norm(dim=-1).mean()),
        "k_norm": float(k.norm(dim=-1)[prompts.same].mean()),
        "q_on_pattern": float((q * direction).sum(-1).mean()),
        "k_on_pattern": float(same_k.mean()),
    }


@torch.no_grad()
def qk_gains(model: OneLayerICL, cfg: Config) -> dict:
    """How much ``W_Q`` and ``W_K`` amplify the relevant patterns against the irrelevant ones:
    the mean of ``||W mu_j|| / ||mu_j||`` and of ``||W nu_k||`` over the in-domain patterns (both
    ``init_attn`` at initialisation). Prop. 1's "project onto the pattern, filter the noise"."""
    dom, dev = in_domain(cfg, "all"), model.W_Q.device
    pad = torch.zeros(cfg.d_Y, device=dev)

    def gain(W: torch.Tensor, vectors: torch.Tensor) -> float:
        vectors = vectors.to(dev)
        embedded = torch.cat([vectors, pad.expand(len(vectors), -1)], dim=1)
        return float(((embedded @ W.T).norm(dim=1) / vectors.norm(dim=1)).mean())

    return {
        "q_gain_pattern": gain(model.W_Q, dom.relevant),
        "q_gain_noise": gain(model.W_Q, dom.irrelevant),
        "k_gain_pattern": gain(model.W_K, dom.relevant),
        "k_gain_noise": gain(model.W_K, dom.irrelevant),
    }


def angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle in radians between the rows of ``u`` and the vector ``v``."""
    cos = (u @ v) / (u.norm(dim=-1) * v.norm()).clamp_min(1e-30)
    return torch.arccos(cos.clamp(-1, 1))


@torch.no_grad()
def neuron_geometry(model: OneLayerICL, cfg: Config) -> dict:
    """Prop. 2: for each row of ``W_O W_V``, the magnitude and angle of its label part to ``q``
    and of its feature part to the mean IDR pattern, with the sign of its read-out ``a_i``."""
    rows = model.neuron_rows()
    feat, lab = rows[:, : cfg.d_X], rows[:, cfg.d_X :]
    q = torch.zeros(cfg.d_Y, device=rows.device)
    q[0] = 1.0
    mu_bar = in_domain(cfg, "all").relevant.mean(0).to(rows.device)
    return {
        "label_norm": lab.norm(dim=-1),
        "label_angle": angle(lab, q),
        "feature_norm": feat.norm(dim=-1),
        "feature_angle": angle(feat, mu_bar),
        "positive": model.a > 0,
        "row_norm": model.W_O.norm(dim=-1),
    }


def feature_geometry(
    models: Sequence[OneLayerICL], cfg: Config, geometries: Sequence[dict]
) -> tuple[list[bool], np.ndarray, np.ndarray]:
    """Proposition 2's three readings per model, on its large neurons (row norm of ``W_O`` above
    the median), from :func:`neuron_geometry`'s ``geometries``: whether every positive neuron's
    label part is within ``pi/4`` of ``q`` and every negative one's beyond ``3 pi/4``; the median
    cosine of the feature parts with the mean IDR pattern; and the smallest share of a feature
    part's norm inside the span of the IDR patterns (the first ``M1`` coordinates)."""
    label_ok, cosines, in_span = [], [], []
    for m, g in zip(models, geometries):
        big = g["row_norm"] > g["row_norm"].median()
        pos, neg = big & g["positive"], big & ~g["positive"]
        label_ok.append(
            bool((g["label_angle"][pos] < np.pi / 4).all() and (g["label_angle"][neg] > 3 * np.pi / 4).all())
        )
        cosines.append(float(torch.cos(g["feature_angle"][big]).median()))
        rows = m.neuron_rows().detach()[big, : cfg.d_X]
        in_span.append(float((rows[:, : cfg.M1].norm(dim=1) / rows.norm(dim=1)).min()))
    return label_ok, np.array(cosines), np.array(in_span)


@torch.no_grad()
def progress_measures(model: OneLayerICL, cfg: Config, id_val: Prompts, ood_val: Prompts, ood_domain: Domain) -> dict:
    """Everything the chapter follows during training, as JSON-able values: in-domain error and
    attention on unseen tasks, OOD attention, the Q/K projections, and each neuron's geometry."""
    ev, ood = evaluate(model, id_val), evaluate(model, ood_val)
    geo = neuron_geometry(model, cfg)
    out = {
        "id_error": ev["error"],
        "id_hinge": ev["hinge"],
        "id_attention": ev["same_attention"],
        "ood_error": ood["error"],
        "ood_attention": ood["same_attention"],
    }
    out.update(qk_projections(model, ood_val, ood_domain, cfg))
    out.update(qk_gains(model, cfg))
    out.update({k: v.tolist() for k, v in geo.items() if k != "positive"})
    return out


# ---------------------------------------------------------------------------------------------
# Pruning and the lucky neurons (Theorem 3)
# ---------------------------------------------------------------------------------------------


def pruning_mask(
    row_norms: torch.Tensor, rate: float, how: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mask ``(m,)`` keeping ``1 - rate`` of the neurons: ``how`` is ``"magnitude"`` (drop the
    smallest rows of ``W_O``), ``"largest"`` (drop the largest first) or ``"random"``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pruning rate must lie in [0, 1], got {rate}")
    m = row_norms.shape[0]
    k = int(round(rate * m))
    if how == "magnitude":
        order = torch.argsort(row_norms)
    elif how == "largest":
        order = torch.argsort(row_norms, descending=True)
    elif how == "random":
        if generator is None:
            raise ValueError("random pruning needs a generator")
        # drawn where the generator lives (the same mask on every device), then moved
        order = torch.randperm(m, generator=generator, device=generator.device).to(row_norms.device)
    else:
        raise ValueError(f"how must be 'magnitude', 'largest' or 'random', got {how!r}")
    mask = torch.ones(m, device=row_norms.device)
    mask[order[:k]] = 0.0
    return mask


@torch.no_grad()
def pruning_sweep(
    models: Sequence[OneLayerICL],
    row_norms: Sequence[torch.Tensor],
    prompts: Prompts,
    rates: Sequence[float],
    *,
    hows: Sequence[str] = ("magnitude", "random", "largest"),
    random_draws: int = 5,
    mask_generator: Callable[[int], torch.Generator] | None = None,
) -> dict[str, np.ndarray]:
    """Hinge loss and error after pruning each model's neurons at each rate (Theorem 3, Fig. 23):
    ``{how: (2, models, rates)}``, index 0 the hinge loss, 1 the error. ``row_norms[s]`` are model
    ``s``'s row norms of ``W_O``; ``"random"`` averages ``random_draws`` masks, draw ``d`` from
    ``mask_generator(d)`` (the same draws for every model and rate)."""
    if len(models) != len(row_norms):
        raise ValueError(f"need one set of row norms per model: {len(row_norms)} for {len(models)} models")
    if "random" in hows and mask_generator is None:
        raise ValueError("random pruning needs mask_generator(d) -> torch.Generator")
    out = {how: np.zeros((2, len(models), len(rates))) for how in hows}
    for s, (m, norms) in enumerate(zip(models, row_norms)):
        for k, r in enumerate(rates):
            for how in hows:
                draws = random_draws if how == "random" else 1
                res = [
                    evaluate(m, prompts, pruning_mask(norms, r, how, mask_generator(d) if how == "random" else None))
                    for d in range(draws)
                ]
                out[how][0, s, k] = np.mean([x["hinge"] for x in res])
                out[how][1, s, k] = np.mean([x["error"] for x in res])
    return out


def norm_split(row_norms: torch.Tensor) -> tuple[int, float]:
    """Split the norms into a small and a large group (Otsu's threshold on the log-norms: the
    split that maximises the between-group variance). Returns ``(size of the small group,
    median of the large group / median of the small group)``; the ratio is near 1 for a single
    group and large for two well-separated ones."""
    x = torch.sort(torch.log(row_norms.double())).values
    n = len(x)
    if n < 2:
        raise ValueError("need at least two norms to split")
    best, k_best = -1.0, 1
    for k in range(1, n):
        lo, hi = x[:k], x[k:]
        between = k * (n - k) * float(lo.mean() - hi.mean()) ** 2
        if between > best:
            best, k_best = between, k
    ratio = float(torch.exp(x[k_best:].median() - x[:k_best].median()))
    return k_best, ratio


def large_group(row_norms: torch.Tensor, n_small: int) -> torch.Tensor:
    """Mask ``(m,)`` of the neurons outside the ``n_small`` smallest row norms (the large group of
    :func:`norm_split`)."""
    large = torch.zeros(len(row_norms), dtype=torch.bool, device=row_norms.device)
    large[torch.argsort(row_norms)[n_small:]] = True
    return large


def pruning_checks(prune: dict[str, np.ndarray], rates: np.ndarray, small_frac: Sequence[float]) -> dict[str, list]:
    """Theorem 3's readings of :func:`pruning_sweep`'s hinge losses, per model ``s``, with
    ``rates[0] = 0`` (unpruned) and ``rates[2]`` the first rate of the linear check:

    * ``within``: the largest hinge loss of magnitude pruning up to the rate ``small_frac[s]``,
      divided by the unpruned loss;
    * ``random_worse``: random pruning's loss above magnitude pruning's at the largest rate up to
      ``small_frac[s]``;
    * ``linear``: largest-first pruning's rise over the unpruned loss, divided by the rate, never
      falls below its value at ``rates[2]`` (a 0.1% tolerance)."""
    within, random_worse, linear = [], [], []
    for s in range(prune["magnitude"].shape[1]):
        upto = rates <= small_frac[s] + 1e-9
        base = prune["magnitude"][0, s, 0]
        within.append(float(prune["magnitude"][0, s, upto].max() / base))
        k = np.flatnonzero(upto)[-1]
        random_worse.append(bool(prune["random"][0, s, k] > prune["magnitude"][0, s, k]))
        rise = (prune["largest"][0, s, 1:] - base) / rates[1:]
        linear.append(bool(np.all(rise[1:] >= rise[1] * 0.999)))
    return {"within": within, "random_worse": random_worse, "linear": linear}


@torch.no_grad()
def initial_activity(cfg: Config, seed: int, prompts: Prompts) -> torch.Tensor:
    """Theorem 3's "lucky" neurons: for the model of ``seed`` *at initialisation*, the fraction
    of ``prompts`` on which each neuron's ReLU is active, ``(m,)``."""
    return (internals.read(OneLayerICL(cfg, seed=seed), prompts.tokens, "hidden") > 0).float().mean(0)


def separation_auc(scores: torch.Tensor | np.ndarray, in_group: torch.Tensor | np.ndarray) -> float:
    """The probability that a random member of the group scores higher than a random non-member
    (ties count half): 1 for a perfect separation, 0.5 for none (the Mann-Whitney AUC)."""
    s, g = np.asarray(scores, dtype=float), np.asarray(in_group, dtype=bool)
    a, b = s[g], s[~g]
    if len(a) == 0 or len(b) == 0:
        raise ValueError("need members both inside and outside the group")
    diff = a[:, None] - b[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())
