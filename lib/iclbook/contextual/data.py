"""In-context linear regression prompts with concatenated ``[x; y]`` tokens."""

from __future__ import annotations

import torch


def sample_tasks(
    n_prompts: int, *, N: int, d: int, generator: torch.Generator, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts of in-context linear regression (Garg et al. 2022; tokens as in von Oswald et al.).

    For each prompt ``w ~ N(0, I_d)``, ``x_1..x_N, x_q ~ N(0, I_d)`` and ``y_i = <w, x_i>``.

    Returns
    -------
    tokens : (n_prompts, N + 1, d + 1)
        rows ``[x_i, y_i]`` for the context, then the query row ``[x_q, 0]``.
    target : (n_prompts,)
        ``<w, x_q>``.
    w : (n_prompts, d)
        each prompt's task, to draw further queries of it (:func:`with_queries`).
    """
    if n_prompts < 1 or N < 0 or d < 1:
        raise ValueError(f"need n_prompts >= 1, N >= 0, d >= 1; got {n_prompts}, {N}, {d}")
    w = torch.randn(n_prompts, d, generator=generator, dtype=dtype)
    x = torch.randn(n_prompts, N + 1, d, generator=generator, dtype=dtype)
    y = torch.einsum("bnd,bd->bn", x, w)
    tokens = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    tokens[:, -1, -1] = 0.0
    return tokens, y[:, -1].clone(), w


def sample_prompts(
    n_prompts: int, *, N: int, d: int, generator: torch.Generator, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, target)`` of :func:`sample_tasks` (the same draws)."""
    tokens, target, _ = sample_tasks(n_prompts, N=N, d=d, generator=generator, dtype=dtype)
    return tokens, target


def with_queries(
    tokens: torch.Tensor, w: torch.Tensor, n_queries: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same contexts with ``n_queries`` fresh queries of the same tasks.

    Returns query tokens ``(B, n_queries, d + 1)`` (label slot 0) and their targets
    ``(B, n_queries)``.
    """
    B, _, n = tokens.shape
    if w.shape != (B, n - 1):
        raise ValueError(f"w must be (B, d) = {(B, n - 1)}, got {tuple(w.shape)}")
    x = torch.randn(B, n_queries, n - 1, generator=generator, dtype=tokens.dtype)
    queries = torch.cat([x, x.new_zeros(B, n_queries, 1)], dim=-1)
    return queries, torch.einsum("bqd,bd->bq", x, w)


def foreign_contexts(tokens: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Each prompt's query after another prompt's context: prompt ``b`` gets the context of
    prompt ``b + shift`` (cyclically) and keeps its own query, so its target is unchanged.

    The null of a measurement of learning from the context: a reader that learns the task from
    the context cannot use another task's context (its labels come from another ``w``)."""
    B = tokens.shape[0]
    if tokens.dim() != 3 or B < 2 or shift % B == 0:
        raise ValueError(
            f"need a batch of >= 2 prompts and a shift that moves them, got {tuple(tokens.shape)}, {shift}"
        )
    return join(tokens[:, :-1].roll(-shift, dims=0), tokens[:, -1])


def split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context (B, N, n), query (B, n))`` from a prompt ``(B, N + 1, n)``."""
    if tokens.dim() != 3 or tokens.shape[1] < 1:
        raise ValueError(
            f"tokens must be a 3-D tensor (batch, N + 1, n), got {tokens.dim()}-D shape {tuple(tokens.shape)}"
        )
    if not bool(torch.isfinite(tokens).all()):
        raise ValueError("the tokens have non-finite entries (NaN or inf): the layer's outputs would be undefined")
    return tokens[:, :-1], tokens[:, -1]


def join(context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The prompt ``[context; query]`` of shape ``(B, N + 1, n)``."""
    return torch.cat([context, query.unsqueeze(1)], dim=1)
