"""One figure style for the whole book, and the plots that several chapters share.

Call :func:`set_style` once per chapter. Helpers take an ``ax`` and return it, so a chapter
composes its own figure layout and keeps control of titles and captions.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from PIL import Image
from tqdm.std import tqdm

from iclbook import runtime

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


# ---------------------------------------------------------------------------------------------
# A figure a reader scrubs: pre-rendered frames and a range slider, self-contained HTML
# ---------------------------------------------------------------------------------------------

_SCRUBBER_JS = """
(function () {
  var root = document.currentScript.parentElement;
  var data = JSON.parse(root.querySelector(".iclbook-scrubber-data").textContent);
  var slider = root.querySelector("input[type=range]");
  var img = root.querySelector("img.iclbook-scrubber-frame");
  var label = root.querySelector("output");
  var play = root.querySelector("button.iclbook-scrubber-play");
  var last = data.frames.length - 1;
  function show(k) {
    k = Math.max(0, Math.min(last, Math.round(+k)));
    img.src = "data:image/png;base64," + data.frames[k];
    img.setAttribute("data-frame", String(k));
    img.alt = data.alt + " " + data.labels[k];
    label.textContent = data.labels[k];
    slider.value = String(k);
  }
  var timer = null;
  function stop() { clearInterval(timer); timer = null; play.textContent = "\u25b6"; play.setAttribute("aria-label", "play"); }
  slider.addEventListener("input", function () { show(slider.value); });
  play.addEventListener("click", function () {
    if (timer) { stop(); return; }
    if (+slider.value >= last) { show(0); }
    play.textContent = "\u275a\u275a"; play.setAttribute("aria-label", "pause");
    timer = setInterval(function () { if (+slider.value >= last) { stop(); } else { show(+slider.value + 1); } }, data.interval);
  });
})();
"""


def frame_png(fig: plt.Figure, *, dpi: int = 72, colours: int = 192) -> bytes:
    """``fig`` as a PNG of ``dpi`` with an adaptive palette of ``colours`` colours (a line figure
    loses nothing visible, and the file is a third of a full-colour one)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colours, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Scrubber:
    """Frames (PNG bytes) and their labels, shown as one image with a range slider, a play button
    and the frame's label, in self-contained HTML: the frames are inline (base64), the script is
    a few lines of plain JavaScript, nothing is fetched, and no kernel is needed, so it works in the
    built book opened from disk. ``start`` is the frame shown first; ``alt`` describes the figure
    (each frame's label is appended). ``interval`` is the play button's milliseconds per frame."""

    frames: list[bytes]
    labels: list[str]
    start: int = 0
    alt: str = "figure"
    interval: int = 350

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("a scrubber needs at least one frame")
        if len(self.labels) != len(self.frames):
            raise ValueError(f"one label per frame: {len(self.frames)} frames, {len(self.labels)} labels")
        if not 0 <= self.start < len(self.frames):
            raise ValueError(f"start frame {self.start} is not one of the {len(self.frames)} frames")

    def __repr__(self) -> str:
        size = sum(len(f) for f in self.frames)
        return f"<Scrubber: {len(self.frames)} frames, {size / 1024:.0f} KB of PNG, from {self.labels[0]!r} to {self.labels[-1]!r}>"

    def _repr_html_(self) -> str:
        encoded = [base64.b64encode(f).decode("ascii") for f in self.frames]
        data = json.dumps({"frames": encoded, "labels": self.labels, "alt": self.alt, "interval": self.interval})
        data = data.replace("<", "\\u003c")  # nothing in the JSON can close its script element
        k, last = self.start, len(self.frames) - 1
        return (
            '<div class="iclbook-scrubber" style="margin:0.5em 0 1em">'
            '<div style="display:flex;align-items:center;gap:0.6em;margin-bottom:0.3em">'
            '<button type="button" class="iclbook-scrubber-play" aria-label="play" '
            'style="min-width:2.4em;cursor:pointer">\u25b6</button>'
            f'<input type="range" min="0" max="{last}" step="1" value="{k}" style="flex:1" '
            f'aria-label="{html.escape(self.alt)}: frame">'
            f'<output style="min-width:12em;font-family:monospace">{html.escape(self.labels[k])}</output></div>'
            f'<img class="iclbook-scrubber-frame" data-frame="{k}" alt="{html.escape(self.alt + " " + self.labels[k])}" '
            f'src="data:image/png;base64,{encoded[k]}" style="max-width:100%;height:auto">'
            f'<script type="application/json" class="iclbook-scrubber-data">{data}</script>'
            f"<script>{_SCRUBBER_JS}</script></div>"
        )


def scrubber(
    fig: plt.Figure,
    draw: Callable[[int], None],
    labels: Sequence[str],
    *,
    start: int = 0,
    alt: str = "figure",
    html_output: bool | None = None,
    dpi: int = 72,
) -> Scrubber | None:
    """A figure a reader scrubs over ``len(labels)`` frames: ``draw(k)`` updates ``fig`` to frame
    ``k``. In the HTML book (:func:`iclbook.runtime.html_build`, or ``html_output=True``) every
    frame is rendered and the :class:`Scrubber` is displayed and returned. Elsewhere (Colab,
    Jupyter, the paired notebook) the figure is drawn at frame ``start`` and shown as a static
    figure, with a line saying that the built book has the slider; returns None."""
    n = len(labels)
    if n == 0:
        raise ValueError("a scrubber needs at least one frame label")
    if not 0 <= start < n:
        raise ValueError(f"start frame {start} is not one of the {n} frames")
    use_html = runtime.html_build() if html_output is None else html_output
    if not use_html:
        draw(start)
        print(f"{labels[start]} (the HTML book shows this figure with a slider over all {n} frames)")
        plt.show()
        return None
    frames = []
    for k in tqdm(range(n), desc="frames", disable=not runtime.progress_enabled()):
        draw(k)
        frames.append(frame_png(fig, dpi=dpi))
    plt.close(fig)
    out = Scrubber(frames, list(labels), start=start, alt=alt)
    try:
        from IPython.display import display  # noqa: PLC0415
    except ImportError:  # a plain Python run
        return out
    display(out)
    return out
