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
from collections.abc import Callable
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


def _distinct_label_classes(n: int, m: int, n_classes: int, L: int, g: torch.Generator) -> torch.Tensor:
    """``(n, m)`` classes with ``m`` distinct labels per row (the author's ``no_repeats``):
    labels without replacement, then a uniform class among the ``n_classes / L`` of each label."""
    labels = torch.rand(n, L, generator=g).argsort(dim=1)[:, :m]
    within = torch.randint(0, n_classes // L, (n, m), generator=g)
    return within * L + labels


def _bursty_rows(
    n: int, N: int, B: int, n_classes: int, L: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts of ``N / B`` distinct-label classes each repeated ``B`` times, shuffled, and a
    query class drawn uniformly among them."""
    m = N // B
    base = _distinct_label_classes(n, m, n_classes, L, g)
    query = base.gather(1, torch.randint(0, m, (n, 1), generator=g)).squeeze(1)
    tiled = base.repeat(1, B)
    order = torch.rand(n, N, generator=g).argsort(dim=1)
    return tiled.gather(1, order), query


def sample(task: Task, n: int, cfg: Config, generator: torch.Generator, *, flip_labels: bool = False) -> Sequences:
    """Draw ``n`` sequences as the author's ``generate_input_seqs`` does: tokens ``(n, T, d)``.

    The burstiness ``B``, the shares ``p_B`` (bursty) and ``p_C`` (novel classes) and the noise
    ``eps`` are ``cfg``'s (another mix is ``replace(cfg, p_B=1.0, p_C=0.0)``). ``B = 0`` means no
    bursty sequences (``p_B = 0``), and novel-class sequences then use ``B = N / 2``. With
    ``flip_labels`` every context label of a known-class sequence is replaced by the next label
    ``(y + 1) mod L``, and the target becomes the query's next label (the IC2 evaluation set).
    """
    B, p_B, p_C, eps = cfg.B, cfg.p_B, cfg.p_C, cfg.eps
    N, L, K, D = cfg.N, task.L, task.K, task.D
    check_data_args(K=K, L=L, N=N, B=B, p_B=p_B, p_C=p_C, eps=eps, zipf=cfg.zipf, Nmax=cfg.Nmax)
    if n < 1:
        raise ValueError(f"need n >= 1 sequences, got {n}")
    g = generator
    if B == 0:
        B, p_B = N // 2, 0.0
    scale = 1.0 / math.sqrt(D)
    e_fac = 1.0 / math.sqrt(1.0 + eps**2)

    # known classes: bursty rows, replaced by iid Zipf rows where not bursty
    classes, query = _bursty_rows(n, N, B, K, L, g)
    bursty = torch.rand(n, generator=g) < p_B
    iid = torch.multinomial(task.zipf_p, n * (N + 1), replacement=True, generator=g).view(n, N + 1)
    classes = torch.where(bursty[:, None], classes, iid[:, :N])
    query = torch.where(bursty, query, iid[:, N])
    # novel classes: fresh means for this call, always bursty
    novel_mus = torch.randn(cfg.K_c, D, generator=g) * scale
    c_classes, c_query = _bursty_rows(n, N, B, cfg.K_c, L, g)
    novel = torch.rand(n, generator=g) < p_C

    all_classes = torch.cat([classes, query[:, None]], dim=1)
    all_novel = torch.cat([c_classes, c_query[:, None]], dim=1)
    ids = torch.where(novel[:, None], all_novel + K, all_classes)  # rows of [known means; novel means]
    means = torch.cat([task.mus, novel_mus])[ids]  # one gather instead of two and a where
    noise = torch.randn(n, N + 1, D, generator=g) * scale
    items = e_fac * (means + eps * noise)  # (n, N+1, D)
    labels_all = torch.where(novel[:, None], all_novel % L, all_classes % L)  # (n, N+1)
    shown = labels_all[:, :N]
    target = labels_all[:, N]
    if flip_labels:
        shown = torch.where(novel[:, None], shown, (shown + 1) % L)
        target = torch.where(novel, target, (target + 1) % L)

    T = 2 * N + 1
    tokens = torch.zeros(n, T, cfg.P + D)
    tokens[:, 0 : 2 * N : 2, cfg.P :] = items[:, :N]
    tokens[:, 1 : 2 * N : 2, cfg.P :] = task.lambdas[shown]
    tokens[:, -1, cfg.P :] = items[:, N]
    shift = torch.randint(0, cfg.P - T + 1, (n,), generator=g)
    slots = shift[:, None] + torch.arange(T)
    tokens.scatter_(2, slots[:, :, None], 1.0)
    return Sequences(
        tokens=tokens,
        target=target,
        classes=ids[:, :N],
        query_class=ids[:, N],
        context_labels=shown,
        novel=novel,
        bursty=bursty | novel,
        shift=shift,
    )


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
