"""The minimal model over many seeds at once: when its jump comes (Nguyen & Reddy 2025), how fast
its classifier memorises as the number of classes grows, and what its TLA2 channel does when the
query can also attend to the item tokens (the paper's "intrinsic curriculum").

:func:`train_lean` trains an ensemble of :class:`~iclbook.induction.model.MinimalNet` members as
*one* set of stacked tensors (a leading member dimension ``M`` on every parameter, one forward
pass, one backward pass, one optimiser step): AdamW on the classifier and plain SGD on the three
scalars, as the chapter's minimal model trains. The batches come from :func:`draw_lean`, which
draws only what the minimal model reads (item, label and query vectors; no position slots) for
every member at once from one generator. The data law is the chapter's
(:mod:`iclbook.induction.data`: bursty contexts with distinct labels, novel classes, iid
classes), with one simplification: the fresh class means of novel-class sequences are drawn per
member and batch (``K_c`` of them, as the author does), but by one generator for the ensemble.
So a member here is *not* the chapter's run of the same seed step for step: it starts from the
same weights and task (the same streams), and sees other batches.

Each member belongs to an *arm* (:class:`Arm`): arms of one seed share its initial weights and
task; arms with the same ``stream`` see the same batches (a seed-matched ablation); ``frozen``
names scalars held at their initial value (``("beta2",)``: no bias towards the label tokens).
``items`` (an arm's) lets the query attend to the ``N`` item tokens as well (logit 0, value the
item vector): then TLA2 starts at ``N / (2N + 1)``, not ``N / (N + 1)``, and ``beta2`` has a slow
phase to drive. Without it the forward pass is :class:`MinimalNet`'s (a test checks that the two
agree).

A module of its own: no cached run of the chapter depends on it (it trains in seconds and
caches nothing), so editing it retrains nothing. What the chapter reads from these runs (onsets,
their skewness, the exponent in ``K``, with their intervals and nulls) is in
:mod:`iclbook.induction.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from iclbook import runtime
from iclbook.induction.config import Config, check_data_args
from iclbook.induction.data import make_task
from iclbook.induction.model import MinimalNet

SCALARS = ("beta1", "alpha", "beta2")
WEIGHTS = ("w1", "w2", "w3", "b1", "b2", "b3", "readout")


@dataclass(frozen=True)
class Arm:
    """One condition of an ensemble: its name, its batch stream (arms with the same ``stream``
    see the same batches), the scalars it holds at their initial value, and whether its query
    attends to the item tokens too (``items``)."""

    name: str
    stream: int = 0
    frozen: tuple[str, ...] = ()
    items: bool = False  # the query attends to the item tokens too (logit 0)
    stop_at: float | None = None  # this arm's level for train_lean's until (default: until's)

    def __post_init__(self) -> None:
        bad = sorted(set(self.frozen) - set(SCALARS))
        if bad:
            raise ValueError(f"only the scalars {SCALARS} can be frozen, got {bad}")
        if self.stream < 0:
            raise ValueError(f"a batch stream is an index >= 0, got {self.stream}")


@dataclass
class Lean:
    """What the minimal model reads of a batch, for ``M`` members of ``n`` sequences each.

    The model never needs the context's item vectors themselves: only their dot products with
    the query (the match logits), and, where the query reads the items too, their sum. So a batch
    holds those: drawn from their exact joint law (:func:`draw_lean`), ``N + D`` numbers a
    sequence instead of ``N D``."""

    query: torch.Tensor  # (M, n, D) the query item x_q
    dots: torch.Tensor  # (M, n, N) x_q . x_j for each context item
    item_sum: torch.Tensor  # (M, n, D) sum_j x_j (empty where the model does not read items)
    target: torch.Tensor  # (M, n) the query's label
    context_labels: torch.Tensor  # (M, n, N) label index after each item
    match: torch.Tensor  # (M, n, N) bool: the item has the query's class

    def repeat(self, times: int) -> Lean:
        """The same batch for ``times`` groups of members, stacked along the member dimension."""
        return Lean(**{k: getattr(self, k).repeat(times, *([1] * (getattr(self, k).dim() - 1))) for k in _FIELDS})

    @staticmethod
    def cat(parts: Sequence[Lean]) -> Lean:
        """Batches of several groups of members, one after the other along the member dimension
        (a group without the items' sum gets zeros there, which a label-only member never reads)."""
        out = {k: torch.cat([getattr(p, k) for p in parts]) for k in _FIELDS if k != "item_sum"}
        sums = [p.item_sum for p in parts]
        if all(x.numel() == 0 for x in sums):
            out["item_sum"] = sums[0]
        else:
            out["item_sum"] = torch.cat([x if x.numel() else torch.zeros_like(p.query) for x, p in zip(sums, parts)])
        return Lean(**out)

    @staticmethod
    def from_items(
        items: torch.Tensor,
        query: torch.Tensor,
        target: torch.Tensor,
        context_labels: torch.Tensor,
        match: torch.Tensor,
    ) -> Lean:
        """A batch from the item vectors ``(M, n, N, D)`` themselves (e.g. the tokens of
        :func:`~iclbook.induction.data.sample`, position slots dropped)."""
        dots = (items @ query.unsqueeze(-1)).squeeze(-1)
        return Lean(query, dots, items.sum(-2), target, context_labels, match)


_FIELDS = ("query", "dots", "item_sum", "target", "context_labels", "match")


def draw_lean(
    mus: torch.Tensor,
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    n: int,
    cfg: Config,
    generator: torch.Generator,
    *,
    item_sum: bool = False,
) -> Lean:
    """``n`` sequences for each of ``M`` members, drawn at once from ``generator``.

    ``mus`` ``(M, Kmax, D)``: each member's class means, the first ``Ks[m]`` rows of member ``m``
    used (members may differ in ``K``: pad the rest); ``lambdas`` ``(M, L, D)``. The law is
    :func:`iclbook.induction.data.sample`'s for ``cfg``'s ``N, B, p_B, p_C, eps, K_c`` with the
    uniform class law (``zipf = 0``): a bursty sequence holds ``N / B`` classes with distinct
    labels, ``B`` times each, and the query is one of them; a non-bursty one draws its ``N + 1``
    classes iid; a novel-class sequence (probability ``p_C``) is bursty over ``K_c`` fresh means
    drawn for this batch. An item is ``x = c (mu + eps eta)``, ``c = 1 / sqrt(1 + eps^2)``,
    ``eta ~ N(0, I / D)``.

    Only the query's noise is drawn in full. For the context, with ``x_q`` given, the numbers
    ``x_q . eta_j = |x_q| r_j`` (``r_j ~ N(0, 1 / D)`` iid) and ``sum_j eta_j = u sum_j r_j +
    (w - u u . w)`` (``u = x_q / |x_q|``, ``w ~ N(0, N I / D)``) have exactly the joint law of
    the ``eta_j``'s: the components along ``u`` and across it are independent Gaussians. Raises
    ``ValueError`` for arguments the generator cannot honour."""
    M, Kmax, D = mus.shape
    L = lambdas.shape[-2]
    N, B = cfg.N, cfg.B
    if cfg.zipf != 0:
        raise ValueError(f"draw_lean draws classes uniformly: set zipf=0 (got {cfg.zipf})")
    if lambdas.shape != (M, L, D) or Ks.shape != (M,):
        raise ValueError(
            f"need lambdas (M, L, D) = {(M, L, D)} and Ks (M,), got {tuple(lambdas.shape)}, {tuple(Ks.shape)}"
        )
    for K in sorted(set(Ks.tolist())):
        check_data_args(K=K, L=L, N=N, B=B, p_B=cfg.p_B, p_C=cfg.p_C, eps=cfg.eps, zipf=0.0, Nmax=cfg.Nmax)
    if int(Ks.max()) > Kmax:
        raise ValueError(f"Ks asks for {int(Ks.max())} classes, mus holds {Kmax}")
    if n < 1:
        raise ValueError(f"need n >= 1 sequences, got {n}")
    g = generator
    Bb = B or N // 2  # B = 0: no bursty sequences; novel ones use N / 2, as in data.sample
    m = N // Bb
    p_B = cfg.p_B if B else 0.0
    # bursty draws, shared by known and novel sequences: m distinct labels, a class of each
    if p_B > 0 or cfg.p_C > 0:
        labels = torch.rand(M, n, L, generator=g).topk(m, dim=-1).indices  # in random order
        u = torch.rand(M, n, m, generator=g)
        pick = torch.randint(0, m, (M, n, 1), generator=g)
        order = torch.rand(M, n, N, generator=g).argsort(dim=-1) if Bb > 1 else None
    else:  # only iid sequences: nothing bursty to draw
        labels, u = torch.zeros(M, n, m, dtype=torch.long), torch.zeros(M, n, m)
        pick, order = torch.zeros(M, n, 1, dtype=torch.long), None
    iid = (torch.rand(M, n, N + 1, generator=g) * Ks[:, None, None]).long()
    bursty = torch.rand(M, n, generator=g) < p_B
    novel = torch.rand(M, n, generator=g) < cfg.p_C
    scale = 1.0 / math.sqrt(D)
    novel_mus = torch.randn(M, cfg.K_c if cfg.p_C > 0 else 0, D, generator=g) * scale
    eta_q = torch.randn(M, n, D, generator=g) * scale
    r = torch.randn(M, n, N, generator=g) * scale
    w = torch.randn(M, n, D, generator=g) * (scale * math.sqrt(N)) if item_sum else None

    per_label = torch.where(novel[..., None], cfg.K_c // L, (Ks // L)[:, None, None])
    base = (u * per_label).long() * L + labels  # (M, n, m): class within its table
    query = base.gather(-1, pick).squeeze(-1)
    context = base.repeat(1, 1, Bb)
    if order is not None:
        context = context.gather(-1, order)
    known = ~novel & ~bursty
    context = torch.where(known[..., None], iid[..., :N], context)
    query = torch.where(known, iid[..., N], query)
    ids = torch.cat([context, query[..., None]], dim=-1)  # (M, n, N + 1) class within its table
    rows = ids + Kmax * novel[..., None]  # rows of [known means; novel means]
    table = torch.cat([mus, novel_mus], dim=1)  # (M, Kmax + K_c, D)
    flat = (rows + table.shape[1] * torch.arange(M)[:, None, None]).flatten()
    means = table.reshape(-1, D).index_select(0, flat).view(M, n, N + 1, D)
    c = 1.0 / math.sqrt(1.0 + cfg.eps**2)
    x_q = c * (means[..., N, :] + cfg.eps * eta_q)
    norm = x_q.norm(dim=-1, keepdim=True)
    context_means = means[..., :N, :]
    dots = c * ((context_means * x_q.unsqueeze(-2)).sum(-1) + cfg.eps * norm * r)
    summed = torch.zeros(0)
    if item_sum:
        unit = x_q / norm
        eta_sum = unit * r.sum(-1, keepdim=True) + w - unit * (unit * w).sum(-1, keepdim=True)
        summed = c * (context_means.sum(-2) + cfg.eps * eta_sum)
    lab = ids % L
    return Lean(
        query=x_q,
        dots=dots,
        item_sum=summed,
        target=lab[..., N],
        context_labels=lab[..., :N],
        match=rows[..., :N] == rows[..., N : N + 1],
    )


def stack_params(models: Sequence[MinimalNet]) -> dict[str, torch.Tensor]:
    """The members' parameters stacked along a first dimension: ``beta1, alpha, beta2`` ``(M,)``,
    ``w1, w2, w3`` ``(M, D, D)``, ``b1, b2, b3`` ``(M, 1)``, ``readout`` ``(M, L, D)``."""
    out = {k: torch.stack([getattr(m, k).detach() for m in models]) for k in SCALARS}
    out.update({k: torch.stack([getattr(m.mlp, k).detach() for m in models]) for k in WEIGHTS})
    return {k: v.clone() for k, v in out.items()}


def forward(
    params: dict[str, torch.Tensor],
    batch: Lean,
    lambdas: torch.Tensor,
    *,
    item_attention: bool | torch.Tensor = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(M, n, L)`` and the query's attention on the label tokens ``(M, n, N)``.

    Member ``m`` computes :class:`MinimalNet`'s forward pass with the parameters ``params[k][m]``
    and its label vectors ``lambdas[m]`` ``(L, D)``: label logits ``alpha sigmoid(beta1) x_q .
    x_j + beta2``, the query itself at logit 0, and ``z = x_q + sum_j a_j lambda_j`` into the
    ReLU classifier. With ``item_attention`` (``True``, or a ``(M,)`` 0/1 mask: per member) the
    query also attends to the ``N`` item tokens at logit 0 (each gets the same weight ``b``) and
    reads their vectors: ``z`` gains ``b sum_j x_j``."""
    col = (slice(None), None, None)
    s1 = torch.sigmoid(params["beta1"])[col]
    logits = params["alpha"][col] * s1 * batch.dots + params["beta2"][col]
    N = logits.shape[-1]
    rest = torch.zeros_like(logits[..., :1])  # the query's own logit
    mask = None
    if isinstance(item_attention, torch.Tensor):
        mask = item_attention.to(logits.dtype)[col]
    elif item_attention:
        mask = torch.ones(()).to(logits.dtype)
    if mask is not None:
        rest = rest + math.log(N + 1) * mask  # the N items and the query, each at logit 0
    att = torch.cat([logits, rest], dim=-1).softmax(-1)
    on_labels = att[..., :N]
    per_label = torch.zeros(*logits.shape[:-1], lambdas.shape[-2]).scatter_add(-1, batch.context_labels, on_labels)
    z = batch.query + per_label @ lambdas
    if mask is not None:
        z = z + mask * (att[..., N:] / (N + 1)) * batch.item_sum
    for i in (1, 2, 3):
        z = torch.relu(z @ params[f"w{i}"].transpose(-1, -2) + params[f"b{i}"][:, None, :])
    return z @ params["readout"].transpose(-1, -2), on_labels


@dataclass
class LeanRuns:
    """What :func:`train_lean` returns: the members' arms, seeds and ``K``, the checkpoint steps,
    every measure as an ``(M, checkpoints)`` array (``curves[name]``), and the step at which each
    member stopped."""

    arms: list[str]  # (M,) the arm's name of each member
    seeds: list[int]  # (M,)
    Ks: list[int]  # (M,)
    steps: np.ndarray  # (checkpoints,)
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # (M, checkpoints) each
    stopped: np.ndarray | None = None  # (M,) the step at which each member stopped training

    def members(self, arm: str) -> np.ndarray:
        """Indices of the members of ``arm`` (in the order they were given)."""
        idx = np.flatnonzero(np.array(self.arms) == arm)
        if not idx.size:
            raise KeyError(f"no arm {arm!r}; the arms are {sorted(set(self.arms))}")
        return idx

    def curve(self, name: str, arm: str | None = None) -> np.ndarray:
        """``(members, checkpoints)``: the measure ``name`` of every member (of ``arm``)."""
        c = self.curves[name]
        return c if arm is None else c[self.members(arm)]


def train_lean(
    cfg: Config,
    members: Sequence[tuple[int, Arm]],
    batch_generators: Sequence[torch.Generator],
    eval_generator: torch.Generator,
    *,
    K: dict[int, int] | None = None,
    steps: int,
    eval_every: int,
    until: tuple[str, float] | None = None,
    n_eval: int = 500,
    lr: float | None = None,
    scalar_lr: float | None = None,
    sets: Sequence[str] = ("IC",),
) -> LeanRuns:
    """Train the minimal models ``members``, each a ``(seed, arm)``, as one stacked ensemble, and
    measure them every ``eval_every`` steps on fixed evaluation sets of ``n_eval`` sequences.

    A seed's members start from ``MinimalNet(cfg, runtime.generator(seed))`` (the weights
    :func:`~iclbook.induction.training.train_runs` starts that seed from) on the task of that
    seed (``make_task`` with ``K[seed]`` classes, default ``cfg.K``), and are measured on the
    same evaluation sets. Batches of ``cfg.batch`` sequences come from
    ``batch_generators[arm.stream]`` (:func:`draw_lean`, every seed of the stream at once):
    members of one seed and one stream see the same batches. The classifier trains with AdamW at
    ``lr`` (default ``cfg.minimal_lr``) and the author's shrink ``cfg.decay``; the scalars with
    plain SGD at ``scalar_lr`` (default ``cfg.minimal_scalar_lr``), but those an arm freezes.

    ``sets`` names what is measured: ``"IC"`` (bursty sequences of novel classes: accuracy,
    TILA2, TLA2, CLA) and ``"IW"`` (iid known classes: accuracy); the scalars are recorded too.
    ``until = (name, level)``: each member stops training at the first checkpoint at which its
    measure ``name`` reaches ``level``, or its arm's ``stop_at`` where it has one
    (``LeanRuns.stopped``), and its later checkpoints repeat
    the measures of that one; the run ends when every member has stopped, or after ``steps``
    steps. The others carry on with their own weights and Adam moments (per element, so dropping
    a member leaves the others' updates as they were); their batches, drawn for fewer members,
    are other draws of the same law from then on.
    """
    members = [(int(s), a) for s, a in members]
    if not members:
        raise ValueError("need at least one (seed, arm) member")
    if len(set(members)) != len(members):
        raise ValueError("every (seed, arm) member must differ")
    seeds = sorted({s for s, _ in members}, key=[s for s, _ in members].index)
    K = {s: cfg.K for s in seeds} if K is None else dict(K)
    missing = [s for s in seeds if s not in K]
    if missing:
        raise ValueError(f"K gives no number of classes for the seeds {missing}")
    streams = sorted({a.stream for _, a in members})
    if streams[-1] >= len(batch_generators):
        raise ValueError(f"arms use batch stream {streams[-1]}, only {len(batch_generators)} generators given")
    unknown = sorted(set(sets) - {"IC", "IW"})
    if unknown or not sets:
        raise ValueError(f"sets are 'IC' and/or 'IW', got {list(sets)}")
    if until is not None and until[0] not in {*sets, "TILA2", "TLA2", "CLA", *SCALARS}:
        raise ValueError(f"until reads a measure of the run, got {until[0]!r} (sets: {list(sets)})")
    if steps < 1 or eval_every < 1 or n_eval < 1:
        raise ValueError(f"steps, eval_every and n_eval must be >= 1, got {steps}, {eval_every}, {n_eval}")
    lr = cfg.minimal_lr if lr is None else lr
    scalar_lr = cfg.minimal_scalar_lr if scalar_lr is None else scalar_lr

    tasks = [make_task(replace(cfg, K=K[s]), runtime.stream("task", s)) for s in seeds]
    Kmax = max(t.K for t in tasks)
    mus = torch.zeros(len(seeds), Kmax, cfg.D)
    for i, t in enumerate(tasks):
        mus[i, : t.K] = t.mus
    lambdas = torch.stack([t.lambdas for t in tasks])
    Kt = torch.tensor([t.K for t in tasks])
    row = {s: i for i, s in enumerate(seeds)}
    of_member = torch.tensor([row[s] for s, _ in members])  # each member's seed row
    stream_of = [a.stream for _, a in members]

    def layout(active: np.ndarray) -> tuple[dict[int, list[int]], torch.Tensor]:
        """The seed rows each stream draws for the ``active`` members, and where each active
        member's batch sits in the concatenation of the streams' draws."""
        rows = {st: sorted({int(of_member[i]) for i in active if stream_of[i] == st}) for st in streams}
        rows = {st: r for st, r in rows.items() if r}
        place, offset = {}, 0
        for st, r in rows.items():
            place.update({(st, x): offset + j for j, x in enumerate(r)})
            offset += len(r)
        return rows, torch.tensor([place[(stream_of[i], int(of_member[i]))] for i in active])

    items_all = torch.tensor([float(a.items) for _, a in members])
    with_items = bool(items_all.any())
    # the streams whose batches an item-reading member sees: only they draw the items' sum
    item_streams = {a.stream for _, a in members if a.items}
    levels = np.array(
        [math.nan if until is None else (until[1] if a.stop_at is None else a.stop_at) for _, a in members]
    )
    models = [MinimalNet(replace(cfg, K=K[s]), runtime.generator(s)) for s in seeds]
    base = stack_params(models)
    params = {k: v[of_member].clone().requires_grad_() for k, v in base.items()}
    keep_all = {k: torch.tensor([float(k not in a.frozen) for _, a in members]) for k in SCALARS}

    eval_cfgs = {
        "IC": replace(cfg, p_B=1.0, p_C=1.0, B=cfg.B or cfg.N // 2),
        "IW": replace(cfg, B=0, p_B=0.0, p_C=0.0),
    }
    evals_all = {
        name: _select(
            draw_lean(mus, Kt, lambdas, n_eval, eval_cfgs[name], eval_generator, item_sum=with_items), of_member
        )
        for name in sets
    }
    M = len(members)
    active = np.arange(M)
    reached = np.zeros(M, dtype=bool)
    record: dict[str, list[np.ndarray]] = {}
    logged: list[int] = []
    last: dict[str, np.ndarray] = {}

    def optimisers() -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return (
            torch.optim.AdamW([params[k] for k in WEIGHTS], lr=lr, weight_decay=cfg.decay / lr),
            torch.optim.SGD([params[k] for k in SCALARS], lr=scalar_lr),
        )

    opt_w, opt_s = optimisers()

    @torch.no_grad()
    def checkpoint(step: int) -> None:
        """Measure the active members; the others keep the measures of their last checkpoint."""
        logged.append(step)
        idx = torch.from_numpy(active)
        lam = lambdas[of_member[idx]]
        out: dict[str, np.ndarray] = {k: params[k].detach().numpy().copy() for k in SCALARS}
        for name, ev_all in evals_all.items():
            ev = _select(ev_all, idx)
            logits, on_labels = forward(
                params, ev, lam, item_attention=items_all[idx] if bool(items_all[idx].any()) else False
            )
            pred = logits.argmax(-1)
            out[name] = (pred == ev.target).float().mean(-1).numpy()
            if name == "IC":
                out["TILA2"] = (on_labels * ev.match).sum(-1).mean(-1).numpy()
                out["TLA2"] = on_labels.sum(-1).mean(-1).numpy()
                out["CLA"] = (ev.context_labels == pred[..., None]).any(-1).float().mean(-1).numpy()
        for k, v in out.items():
            full = last.get(k, np.full(M, np.nan)).copy()
            full[active] = v
            last[k] = full
            record.setdefault(k, []).append(full)
        if until is not None:
            reached[active] |= out[until[0]] >= levels[active]

    with runtime.threads(1):
        checkpoint(0)
        step = 0
        while step < steps:
            if until is not None and reached[active].any():
                # members that reached the level stop here: keep the others' weights and
                # optimiser state (Adam's moments are per element, so slicing them is exact)
                stay = ~reached[active]
                active = active[stay]
                if not active.size:
                    break
                sel = torch.from_numpy(np.flatnonzero(stay))
                moments = {k: dict(opt_w.state[params[k]]) for k in WEIGHTS}
                params = {k: v.detach()[sel].clone().requires_grad_() for k, v in params.items()}
                opt_w, opt_s = optimisers()
                for k in WEIGHTS:
                    opt_w.state[params[k]] = {
                        name: (m if m.dim() == 0 else m[sel].clone()) for name, m in moments[k].items()
                    }
            idx = torch.from_numpy(active)
            rows, pick = layout(active)
            lam, keep = lambdas[of_member[idx]], {k: v[idx] for k, v in keep_all.items()}
            parts = [
                draw_lean(mus[r], Kt[r], lambdas[r], cfg.batch, cfg, batch_generators[st], item_sum=st in item_streams)
                for st, r in rows.items()
            ]
            batch = _select(Lean.cat(parts), pick)
            step += 1
            logits, _ = forward(
                params, batch, lam, item_attention=items_all[idx] if bool(items_all[idx].any()) else False
            )
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.target.flatten(), reduction="none")
            loss.view(len(active), -1).mean(-1).sum().backward()  # the sum of the members' own losses
            for k in SCALARS:
                params[k].grad.mul_(keep[k])
            opt_w.step()
            opt_s.step()
            opt_w.zero_grad(set_to_none=False)
            opt_s.zero_grad(set_to_none=False)
            if step % eval_every == 0 or step == steps:
                checkpoint(step)
    return LeanRuns(
        arms=[a.name for _, a in members],
        seeds=[s for s, _ in members],
        Ks=[K[s] for s, _ in members],
        steps=np.array(logged),
        curves={k: np.stack(v, axis=1) for k, v in record.items()},
        stopped=_stops(np.array(logged), levels, record, until),
    )


def _stops(steps: np.ndarray, levels: np.ndarray, record: dict, until: tuple[str, float] | None) -> np.ndarray:
    """``(M,)`` the step at which each member stopped training (its first checkpoint at its level)."""
    if until is None:
        return np.full(len(levels), float(steps[-1]))
    curve = np.stack(record[until[0]], axis=1)
    hit = curve >= levels[:, None]
    return np.where(hit.any(axis=1), steps[hit.argmax(axis=1)], float(steps[-1]))


def _select(batch: Lean, index: torch.Tensor) -> Lean:
    """The members ``index`` of a batch (a member may appear several times)."""
    if torch.equal(index, torch.arange(batch.query.shape[0])):
        return batch
    return Lean(**{k: getattr(batch, k)[index] if getattr(batch, k).numel() else getattr(batch, k) for k in _FIELDS})
