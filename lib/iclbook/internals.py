"""Every model of the library shows its internals one way: by name.

Each model class lists what it exposes in ``INTERNALS``, a dict from a name to its shape and
meaning, and computes all of it in one pass with ``model.internals(inputs)``, which returns a
dict with exactly those names (as TransformerLens's ``run_with_cache`` does for its models)::

    acts = model.internals(tokens)       # {"attention": (n, l), "hidden": (n, m), ...}
    read(model, tokens, "att1", "att2")  # the named ones, checked against INTERNALS

=====================================  =========================================================
``patterns.OneLayerICL`` (chapter 1)    attention over the contexts, hidden pre-activations, F
``patterns.SmallGPT`` (chapter 1)       the read-in, the stream after each block, the read-out
``induction.InductionNet`` (ch. 3, 5)   both layers' attention, the query state, the ReLU layers
``induction.MinimalNet`` (chapter 3)    the three scalars' attention, the query state, ReLU layers
``contextual.ContextualBlock`` (ch. 4)  the MLP's input A(C, x), the residual, pre-activation, out
``implicit.tinylm.TinyLM`` (chapter 2)  per layer: queries, keys, attention outputs and inputs
=====================================  =========================================================

Hugging Face models (chapter 2's real-model path) are read with the hooks of
:class:`iclbook.implicit.probe.Recorder`, which ``TinyLM.internals`` uses too.
"""

from __future__ import annotations

from typing import Any

import torch


def read(model: Any, inputs: Any, *names: str) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The internals ``names`` of ``model`` on ``inputs``: one tensor for one name, a tuple for
    several. A clear error names what the model has when a name is not among its ``INTERNALS``,
    and when the model returns other names than it documents."""
    documented = getattr(type(model), "INTERNALS", None)
    if documented is None:
        raise TypeError(f"{type(model).__name__} documents no INTERNALS: it is not a model of this library")
    unknown = [n for n in names if n not in documented]
    if unknown:
        raise KeyError(f"{type(model).__name__} has no internals {unknown}; it has {list(documented)}")
    out = model.internals(inputs)
    if set(out) != set(documented):
        raise RuntimeError(f"{type(model).__name__}.internals returned {sorted(out)}, "
                           f"not the documented {sorted(documented)}")
    picked = tuple(out[n] for n in names)
    return picked[0] if len(picked) == 1 else picked
