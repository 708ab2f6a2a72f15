"""Every model of the library shows its internals one way: by name.

Each model class lists what it exposes in ``INTERNALS``, a dict from a name to its shape and
meaning, and computes all of it in one pass with ``model.internals(inputs)``, which returns a
dict with exactly those names (as TransformerLens's ``run_with_cache`` does for its models)::

    acts = model.internals(tokens)       # {"attention": (n, l), "hidden": (n, m), ...}
    read(model, tokens, "att1", "att2")  # the named ones, checked against INTERNALS

======================================  =========================================================
``patterns.OneLayerICL`` (chapter 1)    attention over the contexts, hidden pre-activations, F
``patterns.SmallGPT`` (chapter 1)       the read-in, the stream after each block, the read-out
``induction.InductionNet`` (ch. 3, 5)   both layers' attention, the query state, the ReLU layers
``induction.MinimalNet`` (chapter 3)    the three scalars' attention, the query state, ReLU layers
``contextual.ContextualBlock`` (ch. 4)  the MLP's input A(C, x), the residual, pre-activation, out
``implicit.model.TinyLM`` (chapter 2)   per layer: queries, keys, attention outputs and inputs
======================================  =========================================================

Hugging Face models (chapter 2's real-model path) are read with the hooks of
:class:`iclbook.implicit.probe.Recorder`, which ``TinyLM.internals`` uses too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

#: What an override puts in place of an activation: a tensor (broadcast to the activation's
#: shape), or a function of the activation that returns its replacement.
Override = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]


class HookPoints:
    """Named hook points inside a model's forward pass, as TransformerLens's ``HookPoint``.

    A model mixes this in and passes each named activation through ``self.hook(name, x)`` in its
    ``forward``. With nothing attached, ``hook`` returns ``x`` itself (one dictionary look-up, no
    copy, no graph change: the forward pass computes the same numbers as without hooks). Two
    context managers attach to it, and may be nested:

    * :func:`recording` collects every named activation of the passes run inside it;
    * :func:`overriding` replaces named activations by a tensor or a function of the activation,
      during training or evaluation alike (gradients flow through a function's output; a fixed
      tensor cuts the graph there, as a clamp should).

    ``model.internals(x)`` is one forward pass under :func:`recording`. The names a model offers
    are its ``INTERNALS``; asking for another raises.
    """

    def hook(self, name: str, x: torch.Tensor) -> torch.Tensor:
        state = self.__dict__.get("_hook_state")
        if state is None:
            return x
        rule = state["override"].get(name)
        if rule is not None:
            x = rule(x) if callable(rule) else torch.as_tensor(rule, dtype=x.dtype, device=x.device).expand_as(x)
        if state["record"] is not None:
            state["record"][name] = x
        return x

    def internals(self, *inputs: Any) -> dict[str, torch.Tensor]:
        """Every activation of ``INTERNALS`` on ``inputs``, recorded during one forward pass."""
        with recording(self) as acts:
            self(*inputs)
        return acts


def _state(model: Any) -> dict[str, Any]:
    if not isinstance(model, HookPoints):
        raise TypeError(f"{type(model).__name__} has no hook points (it does not mix in HookPoints)")
    state = model.__dict__.get("_hook_state")
    if state is None:
        state = {"record": None, "override": {}}
        model.__dict__["_hook_state"] = state
    return state


def _release(model: Any, state: dict[str, Any]) -> None:
    if state["record"] is None and not state["override"]:
        model.__dict__.pop("_hook_state", None)


@contextmanager
def recording(model: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the named activations of every forward pass of ``model`` run inside the block
    (a later pass overwrites an earlier one's values)::

        with internals.recording(net) as acts:
            logits = net(tokens)
        acts["att2"]      # (n, T), from the same pass that gave the logits
    """
    state = _state(model)
    outer, acts = state["record"], {}
    state["record"] = acts
    try:
        yield acts
    finally:
        state["record"] = outer
        if outer is not None:
            outer.update(acts)
        _release(model, state)


@contextmanager
def overriding(model: Any, **overrides: Override) -> Iterator[None]:
    """Replace named activations of ``model`` inside the block: ``overriding(net, att2=fixed)``
    puts ``fixed`` (broadcast to the activation's shape) where layer 2's attention was, and
    ``overriding(net, att2=lambda a: a.detach())`` a function of it. Names outside the model's
    ``INTERNALS`` raise ``KeyError``; an inner override of a name wins until its block ends."""
    documented = getattr(type(model), "INTERNALS", {})
    unknown = [n for n in overrides if n not in documented]
    if unknown:
        raise KeyError(f"{type(model).__name__} has no hook points {unknown}; it has {list(documented)}")
    state = _state(model)
    before = dict(state["override"])
    state["override"].update(overrides)
    try:
        yield
    finally:
        state["override"] = before
        _release(model, state)


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
        raise RuntimeError(
            f"{type(model).__name__}.internals returned {sorted(out)}, not the documented {sorted(documented)}"
        )
    picked = tuple(out[n] for n in names)
    return picked[0] if len(picked) == 1 else picked
