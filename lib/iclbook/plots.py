"""One figure style for the whole book, and the plots that several chapters share.

Call :func:`set_style` once per chapter. Helpers take an ``ax`` and return it, so a chapter
composes its own figure layout and keeps control of titles and captions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

#: Colour-blind-safe palette used by every chapter.
PALETTE = "colorblind"


def set_style() -> None:
    """The book's look: seaborn's whitegrid theme, a colour-blind palette, crisp inline figures."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.95)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "figure.figsize": (6.4, 3.8),
            "figure.constrained_layout.use": True,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def colors(n: int) -> list:
    """``n`` colours of the book's palette."""
    return sns.color_palette(PALETTE, n)


def band(
    ax: plt.Axes,
    x: Sequence[float],
    ys: np.ndarray,
    *,
    label: str | None = None,
    color=None,
    spread: str = "se",
    **line_kw,
) -> plt.Axes:
    """Mean curve of ``ys`` (shape ``(runs, len(x))``) with a shaded band across runs.

    ``spread="se"`` shades mean +- one standard error, ``"minmax"`` the range over runs (the
    honest choice for a handful of seeds), ``"sd"`` one standard deviation.
    """
    ys = np.atleast_2d(np.asarray(ys, dtype=float))
    if ys.shape[1] != len(x):
        raise ValueError(f"ys has {ys.shape[1]} columns but x has {len(x)} points")
    mean = ys.mean(axis=0)
    if spread == "se":
        half = ys.std(axis=0, ddof=1) / np.sqrt(ys.shape[0]) if ys.shape[0] > 1 else 0 * mean
        lo, hi = mean - half, mean + half
    elif spread == "sd":
        half = ys.std(axis=0, ddof=1) if ys.shape[0] > 1 else 0 * mean
        lo, hi = mean - half, mean + half
    elif spread == "minmax":
        lo, hi = ys.min(axis=0), ys.max(axis=0)
    else:
        raise ValueError(f"spread must be 'se', 'sd' or 'minmax', got {spread!r}")
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return ax


def attention_map(
    ax: plt.Axes, weights: np.ndarray, *, labels: Sequence[str] | None = None, title: str = ""
) -> plt.Axes:
    """Heatmap of an attention matrix ``(queries, keys)``, rows summing to one."""
    weights = np.asarray(weights, dtype=float)
    sns.heatmap(
        weights,
        ax=ax,
        cmap="viridis",
        vmin=0,
        vmax=max(weights.max(), 1e-12),
        square=True,
        cbar_kws={"shrink": 0.7},
        xticklabels=labels if labels is not None else False,
        yticklabels=labels if labels is not None else False,
    )
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    return ax


def sequence_strip(ax: plt.Axes, sets: Mapping[str, Any], *, N: int, K: int, L: int, index: int = 0) -> plt.Axes:
    """One sequence of each of chapter 3's evaluation sets as a row of tokens, read left to right
    (``sets``: name -> ``induction.Sequences``; ``N`` item-label pairs, ``K`` known classes,
    ``L`` labels). Items show their class (a novel class ``K + c`` as ``nc``), label tokens
    their label, both coloured by the label; the query is framed, its answer written after it."""
    palette = plt.get_cmap("hsv", L + 1)  # one distinct colour per label (tab20 would repeat)
    for row, (name, seqs) in enumerate(sets.items()):
        y = -row
        for j in range(N):
            cls, lab = int(seqs.classes[index, j]), int(seqs.context_labels[index, j])
            item_text = f"n{cls - K}" if cls >= K else str(cls)
            true_label = (cls - K) % L if cls >= K else cls % L
            for k, (text, colour) in enumerate(((item_text, true_label), (f"ℓ{lab}", lab))):
                x = 2 * j + k
                ax.add_patch(
                    plt.Rectangle((x, y - 0.4), 0.92, 0.8, color=palette(colour), alpha=0.45 if k == 0 else 0.9)
                )
                ax.text(x + 0.46, y, text, ha="center", va="center", fontsize=8)
        q = int(seqs.query_class[index])
        ax.add_patch(plt.Rectangle((2 * N, y - 0.4), 0.92, 0.8, fill=False, lw=1.5))
        ax.text(
            2 * N + 0.46,
            y,
            f"{'n' + str(q - K) if q >= K else q}?",
            ha="center",
            va="center",
            fontsize=8,
            weight="bold",
        )
        ax.text(2 * N + 1.2, y, f"→ ℓ{int(seqs.target[index])}", va="center", fontsize=9)
        ax.text(-0.4, y, name, ha="right", va="center", fontsize=10, weight="bold")
    ax.set(xlim=(-2.2, 2 * N + 3), ylim=(-len(sets) + 0.4, 0.6))
    ax.axis("off")
    return ax
