"""Chapter 3's data: the task (class means, label vectors, Zipf law), the sequences of item-label
pairs with their burstiness, and the author's four evaluation sets.

As in the author's JAX code (the book's spec, section 2):

* ``K`` classes with fixed means ``mu_k ~ N(0, I_D / D)`` and ``L`` labels with fixed vectors
  ``lambda_l ~ N(0, I_D / D)``; class ``k`` has label ``k mod L`` (``K`` a multiple of ``L``);
* an item of class ``k`` is ``(mu_k + eps * eta) / sqrt(1 + eps^2)`` with ``eta ~ N(0, I_D / D)``;
* a sequence is ``N`` item-label pairs and a query item; the target is the query's label;
* *bursty* sequences (probability ``p_B``) hold ``N / B`` classes with distinct labels, each ``B``
  times, and the query's class is one of them; *non-bursty* ones draw every class iid from the
  Zipf law ``p(k) ~ k^-alpha``; *novel-class* sequences (probability ``p_C``, drawn first) are
  bursty over ``K_c = 128`` fresh class means drawn for every batch;
* a token is ``[one-hot position ; vector]`` with ``2 Nmax + 1`` position slots; each sequence's
  positions start at a random shift.

Every data field (``K``, ``B``, ``p_B``, ``p_C``, ``eps``, ``n_eval``...) is read from the
:class:`~iclbook.induction.config.Config` passed in; a variant is ``dataclasses.replace(cfg, B=4)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from iclbook.induction.config import Config, check_data_args


@dataclass
class Task:
    """The fixed quantities of one run: class means, label vectors, and the Zipf law."""

    mus: torch.Tensor  # (K, D)
    lambdas: torch.Tensor  # (L, D)
    zipf_p: torch.Tensor  # (K,) rank-frequency law over the class index

    @property
    def K(self) -> int:
        return self.mus.shape[0]

    @property
    def L(self) -> int:
        return self.lambdas.shape[0]

    @property
    def D(self) -> int:
        return self.mus.shape[1]


def make_task(cfg: Config, generator: torch.Generator) -> Task:
    """Draw ``cfg.K`` class means ``(K, D)`` and ``cfg.L`` label vectors ``(L, D)``, ``N(0, I_D / D)``
    each, and the Zipf law ``(K,)`` of exponent ``cfg.zipf`` over the class index."""
    K = cfg.K
    check_data_args(K=K, L=cfg.L, N=cfg.N, B=cfg.B, p_B=cfg.p_B, p_C=cfg.p_C, eps=cfg.eps, zipf=cfg.zipf, Nmax=cfg.Nmax)
    scale = 1.0 / math.sqrt(cfg.D)
    lambdas = torch.randn(cfg.L, cfg.D, generator=generator) * scale
    mus = torch.randn(K, cfg.D, generator=generator) * scale
    p = torch.arange(1, K + 1, dtype=torch.float64) ** (-cfg.zipf)
    return Task(mus=mus, lambdas=lambdas, zipf_p=(p / p.sum()).float())


@dataclass
class Sequences:
    """A batch of sequences and what the analysis needs to know about them.

    ``classes`` and ``query_class`` index the task's classes; novel classes are numbered from
    ``K`` on (``K + j`` for the ``j``-th fresh mean of that batch), so a match between a context
    item and the query is ``classes == query_class[:, None]`` in every case.
    """

    tokens: torch.Tensor  # (n, T, d)
    target: torch.Tensor  # (n,) the label the model should output
    classes: torch.Tensor  # (n, N) class of each context item
    query_class: torch.Tensor  # (n,)
    context_labels: torch.Tensor  # (n, N) label index shown after each item
    novel: torch.Tensor  # (n,) bool
    bursty: torch.Tensor  # (n,) bool
    shift: torch.Tensor  # (n,) first position slot

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Sequences:
        """A new batch with ``fn`` applied to every field (``lambda t: t[:n]`` keeps the first
        ``n`` sequences, ``lambda t: t.to(device)`` moves them)."""
        return Sequences(**{k: fn(getattr(self, k)) for k in self.__dataclass_fields__})


def _bursty_draws(n: int, N: int, B: int, n_classes: int, L: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The random numbers of ``N / B`` distinct-label classes per context (the author's
    ``no_repeats``: labels without replacement, then a uniform class among the ``n_classes / L`` of
    each label), repeated ``B`` times and shuffled, with a query among them: drawn from ``g`` in
    this order, turned into classes by :func:`_bursty_rows`."""
    m = N // B
    return {
        "label_keys": torch.rand(n, L, generator=g),
        "within": torch.randint(0, n_classes // L, (n, m), generator=g),
        "query_pick": torch.randint(0, m, (n, 1), generator=g),
        "order_keys": torch.rand(n, N, generator=g),
    }


def _bursty_rows(d: dict[str, torch.Tensor], B: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts ``(..., N)`` and query classes ``(...)`` from :func:`_bursty_draws`' numbers ``d``
    (any leading shape: one batch, or the stacked batches of an ensemble)."""
    m = d["within"].shape[-1]
    labels = d["label_keys"].argsort(dim=-1)[..., :m]
    base = d["within"] * L + labels
    query = base.gather(-1, d["query_pick"]).squeeze(-1)
    tiled = base.repeat(*([1] * (base.dim() - 1)), B)
    return tiled.gather(-1, d["order_keys"].argsort(dim=-1)), query


def _draws(task: Task, n: int, cfg: Config, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random number of one :func:`sample` call, drawn from ``g`` in the author's order;
    :func:`_assemble` turns them into sequences. Checks the arguments."""
    B, p_B, p_C, eps = cfg.B, cfg.p_B, cfg.p_C, cfg.eps
    N, L, K, D = cfg.N, task.L, task.K, task.D
    check_data_args(K=K, L=L, N=N, B=B, p_B=p_B, p_C=p_C, eps=eps, zipf=cfg.zipf, Nmax=cfg.Nmax)
    if n < 1:
        raise ValueError(f"need n >= 1 sequences, got {n}")
    B = B or N // 2  # B = 0: no bursty sequences (p_B = 0), novel-class ones use B = N / 2
    T = 2 * N + 1
    known = _bursty_draws(n, N, B, K, L, g)
    draws = {f"known_{k}": v for k, v in known.items()}
    draws["bursty_keys"] = torch.rand(n, generator=g)
    draws["iid"] = torch.multinomial(task.zipf_p, n * (N + 1), replacement=True, generator=g).view(n, N + 1)
    draws["novel_mus"] = torch.randn(cfg.K_c, D, generator=g) * (1.0 / math.sqrt(D))
    draws.update({f"novel_{k}": v for k, v in _bursty_draws(n, N, B, cfg.K_c, L, g).items()})
    draws["novel_keys"] = torch.rand(n, generator=g)
    draws["noise"] = torch.randn(n, N + 1, D, generator=g) * (1.0 / math.sqrt(D))
    draws["shift"] = torch.randint(0, cfg.P - T + 1, (n,), generator=g)
    return draws


def _assemble(
    mus: torch.Tensor, lambdas: torch.Tensor, d: dict[str, torch.Tensor], cfg: Config, flip_labels: bool
) -> Sequences:
    """Sequences from :func:`_draws`' numbers ``d``. ``mus`` ``(..., K, D)`` and ``lambdas``
    ``(..., L, D)`` carry the same leading shape as ``d``'s tensors minus their batch dimension:
    none for one batch, ``(M,)`` for the stacked batches of ``M`` tasks (every operation is
    elementwise or a gather along the last dimensions, so a stacked batch holds exactly the
    numbers of its members drawn one by one)."""
    N, L, K = cfg.N, lambdas.shape[-2], mus.shape[-2]
    B = cfg.B or N // 2
    p_B = cfg.p_B if cfg.B else 0.0
    e_fac = 1.0 / math.sqrt(1.0 + cfg.eps**2)
    known = {k[6:]: v for k, v in d.items() if k.startswith("known_")}
    fresh = {k[6:]: v for k, v in d.items() if k.startswith("novel_") and k != "novel_mus" and k != "novel_keys"}

    # known classes: bursty rows, replaced by iid Zipf rows where not bursty
    classes, query = _bursty_rows(known, B, L)
    bursty = d["bursty_keys"] < p_B
    iid = d["iid"]
    classes = torch.where(bursty[..., None], classes, iid[..., :N])
    query = torch.where(bursty, query, iid[..., N])
    # novel classes: fresh means for this call, always bursty
    c_classes, c_query = _bursty_rows(fresh, B, L)
    novel = d["novel_keys"] < cfg.p_C

    all_classes = torch.cat([classes, query[..., None]], dim=-1)
    all_novel = torch.cat([c_classes, c_query[..., None]], dim=-1)
    ids = torch.where(novel[..., None], all_novel + K, all_classes)  # rows of [known means; novel means]
    table = torch.cat([mus, d["novel_mus"]], dim=-2)
    if table.dim() == 2:
        means = table[ids]  # one gather instead of two and a where
    else:
        means = table[torch.arange(table.shape[0])[:, None, None], ids]
    items = e_fac * (means + cfg.eps * d["noise"])  # (..., n, N+1, D)
    labels_all = torch.where(novel[..., None], all_novel % L, all_classes % L)  # (..., n, N+1)
    shown = labels_all[..., :N]
    target = labels_all[..., N]
    if flip_labels:
        shown = torch.where(novel[..., None], shown, (shown + 1) % L)
        target = torch.where(novel, target, (target + 1) % L)

    T = 2 * N + 1
    lead = items.shape[:-2]
    tokens = torch.zeros(*lead, T, cfg.P + items.shape[-1])
    tokens[..., 0 : 2 * N : 2, cfg.P :] = items[..., :N, :]
    if lambdas.dim() == 2:
        tokens[..., 1 : 2 * N : 2, cfg.P :] = lambdas[shown]
    else:
        tokens[..., 1 : 2 * N : 2, cfg.P :] = lambdas[torch.arange(lambdas.shape[0])[:, None, None], shown]
    tokens[..., -1, cfg.P :] = items[..., N, :]
    slots = d["shift"][..., None] + torch.arange(T)
    tokens.scatter_(-1, slots[..., None], 1.0)
    return Sequences(
        tokens=tokens,
        target=target,
        classes=ids[..., :N],
        query_class=ids[..., N],
        context_labels=shown,
        novel=novel,
        bursty=bursty | novel,
        shift=d["shift"],
    )


def sample(task: Task, n: int, cfg: Config, generator: torch.Generator, *, flip_labels: bool = False) -> Sequences:
    """Draw ``n`` sequences as the author's ``generate_input_seqs`` does: tokens ``(n, T, d)``.

    The burstiness ``B``, the shares ``p_B`` (bursty) and ``p_C`` (novel classes) and the noise
    ``eps`` are ``cfg``'s (another mix is ``replace(cfg, p_B=1.0, p_C=0.0)``). ``B = 0`` means no
    bursty sequences (``p_B = 0``), and novel-class sequences then use ``B = N / 2``. With
    ``flip_labels`` every context label of a known-class sequence is replaced by the next label
    ``(y + 1) mod L``, and the target becomes the query's next label (the IC2 evaluation set).
    """
    return _assemble(task.mus, task.lambdas, _draws(task, n, cfg, generator), cfg, flip_labels)


def sample_stacked(tasks: Sequence[Task], n: int, cfg: Config, generators: Sequence[torch.Generator]) -> Sequences:
    """The batches of an ensemble at once: member ``i`` draws ``n`` sequences of ``tasks[i]``
    from ``generators[i]``, exactly the numbers ``sample(tasks[i], n, cfg, generators[i])``
    gives, stacked along a first dimension (tokens ``(M, n, T, d)``). Only the random draws run
    per member; the assembly runs once (a training step of a six-member ensemble of small
    models spends most of its time drawing its data otherwise)."""
    if len(tasks) != len(generators) or not tasks:
        raise ValueError(f"need one generator per task: {len(tasks)} tasks, {len(generators)} generators")
    shapes = {(t.K, t.L, t.D) for t in tasks}
    if len(shapes) > 1:
        raise ValueError(f"stacked tasks must share K, L and D; got {sorted(shapes)}")
    draws = [_draws(t, n, cfg, g) for t, g in zip(tasks, generators)]
    stacked = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    mus = torch.stack([t.mus for t in tasks])
    lambdas = torch.stack([t.lambdas for t in tasks])
    return _assemble(mus, lambdas, stacked, cfg, False)


def eval_sets(task: Task, cfg: Config, generator: torch.Generator) -> dict[str, Sequences]:
    """The author's four evaluation sets, ``cfg.n_eval`` sequences each, drawn once in this order
    from ``generator``: ``test`` (the training distribution), ``IC`` (novel classes, bursty),
    ``IC2`` (known classes, bursty, labels flipped by one) and ``IW`` (iid Zipf sequences: only
    the memorised class-to-label map can solve them)."""
    n = cfg.n_eval
    return {
        "test": sample(task, n, cfg, generator),
        "IC": sample(task, n, replace(cfg, p_B=1.0, p_C=1.0), generator),
        "IC2": sample(task, n, replace(cfg, p_B=1.0, p_C=0.0), generator, flip_labels=True),
        "IW": sample(task, n, replace(cfg, B=0, p_B=0.0, p_C=0.0), generator),
    }


def context_label_baseline(seqs: Sequences) -> float:
    """Accuracy of guessing a uniformly random context label: the mean share of context
    labels equal to the target (``B / N`` on bursty sequences)."""
    return float((seqs.context_labels == seqs.target[:, None]).float().mean())
