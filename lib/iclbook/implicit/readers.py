"""Readers without a language model: what the demonstrations give away to a shallow reading.

Each reader sees what an in-context prompt shows (the ``k`` demonstrations with their labels, and
the query) and predicts the query's class. They are the nulls of chapter 2's gates: a model whose
in-context learning is only one of these readings is matched by it.

* :func:`closest_demo` copies the label of the demonstration that shares the most words with the
  query (a nearest-neighbour reader, ties to the latest);
* :func:`one_token` reads one word of the query: for each word, the demonstrations that contain it
  vote with their labels; the reader follows the word whose vote is the most one-sided (the best
  single-token lookup the demonstrations allow). On the first world (:mod:`.data`) this is the cue
  lookup; on the inference world (:mod:`.world`) no word decides.

Words of the template and the label words are not read (every demonstration has them).

Example::

    pred = closest_demo(demos, test.inputs, n_classes)       # (n,) predicted classes
    acc = float((pred == test.classes).float().mean())
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

Demo = tuple[Sequence[str], int]  # (input words, class)


def _check(demos: Sequence[Demo], n_classes: int) -> None:
    if not demos:
        raise ValueError("a reader needs at least one demonstration")
    bad = [y for _, y in demos if not 0 <= int(y) < n_classes]
    if bad:
        raise ValueError(f"demonstration classes must lie in 0..{n_classes - 1}, got {bad[:3]}")


def _majority(labels: Sequence[int], n_classes: int) -> int:
    """The most frequent class of ``labels``; ties go to the smallest class index."""
    counts = Counter(int(y) for y in labels)
    return max(range(n_classes), key=lambda c: (counts.get(c, 0), -c))


def closest_demo(demos: Sequence[Demo], queries: Sequence[Sequence[str]], n_classes: int) -> torch.Tensor:
    """``(n,)`` the class of the demonstration whose words overlap each query's the most (as
    multisets; ties go to the latest demonstration, the one nearest the query in the prompt)."""
    _check(demos, n_classes)
    bags = [Counter(x) for x, _ in demos]
    out = []
    for q in queries:
        bag = Counter(q)
        overlap = [sum((b & bag).values()) for b in bags]
        best = max(range(len(demos)), key=lambda i: (overlap[i], i))
        out.append(int(demos[best][1]))
    return torch.tensor(out, dtype=torch.long)


def one_token(demos: Sequence[Demo], queries: Sequence[Sequence[str]], n_classes: int) -> torch.Tensor:
    """``(n,)`` the best one-word reading of each query: among the query's words that occur in
    some demonstration, the word whose demonstrations' labels agree the most (the largest share
    of one class, then the most demonstrations) decides, by the majority of those labels. A
    query none of whose words occurs in a demonstration gets the demonstrations' majority class."""
    _check(demos, n_classes)
    where: dict[str, list[int]] = {}
    for x, y in demos:
        for w in dict.fromkeys(x):  # each word once, in order
            where.setdefault(w, []).append(int(y))
    fallback = _majority([y for _, y in demos], n_classes)
    out = []
    for q in queries:
        best, key = fallback, (-1.0, 0)
        for w in dict.fromkeys(q):  # in order: ties go to the first word, whatever the hash seed
            labels = where.get(w)
            if not labels:
                continue
            c = _majority(labels, n_classes)
            k = (labels.count(c) / len(labels), len(labels))
            if k > key:
                best, key = c, k
        out.append(best)
    return torch.tensor(out, dtype=torch.long)
