"""Contextual blocks (Dherin et al., 2025): the context acts as a rank-1 update of the MLP.

A *contextual layer* ``A`` maps a sequence to the vector at its last position; ``A(C, x)`` is its
output at the query ``x`` after the context ``C = [c_1, ..., c_n]`` and ``A(x)`` its output on the
query alone. A *contextual block* feeds that vector to an MLP whose first dense layer is
``W``: ``T_W(C, x) = f(W A(C, x) + b)``. Theorem 2.2 of the paper (v1 numbering) says

    T_W(C, x) = T_{W + dW}(x),    dW = (W dA) A(x)^T / ||A(x)||^2,   dA = A(C, x) - A(x),

for any layer ``A`` and any ``f``: the context can be traded for a rank-1 patch of ``W``. With
skip connections (App. A) the block also needs a bias shift ``db' = dA`` on the MLP's output.

The package, one idea per module:

===============  ===============================================================================
``config``       the chapter's sizes per profile;
``data``         in-context linear regression prompts with concatenated ``[x; y]`` tokens;
``layers``       contextual layers (softmax, sliding-window and linear attention, tanh RNN, GRU,
                 diagonal SSM), each with its prefix, suffix and causal outputs;
``model``        the contextual block in three variants (no skip, skip, GPT-style pre-LN) and
                 stacks of blocks, with their hook points (:mod:`iclbook.internals`);
``patches``      the paper's formulas: the rank-1 patch, the static patch of several queries,
                 Prop. 3.1, App. B, stacked patches;
``measures``     the chapter's measurements, as functions that return numbers;
``modern``       the blocks of modern language models (Gemma-style with RMSNorm and a gated MLP,
                 post-norm, parallel) and their exact patches (Goldwaser et al. 2025);
``training``     training blocks through the shared loop and the weight cache.
===============  ===============================================================================

Shapes: ``B`` prompts, ``N`` context tokens, ``n`` token size (``d + 1``), ``m`` the size of the
layer's output, ``h`` the MLP width. All identities are meant to be checked in float64.
Everything is re-exported here: ``from iclbook import contextual as cx; cx.make_block(...)``.
"""

from iclbook.contextual.config import CONFIGS, STREAMS, Config
from iclbook.contextual.data import foreign_contexts, join, sample_prompts, sample_tasks, split, with_queries
from iclbook.contextual.layers import (
    GRU,
    ContextualLayer,
    DiagonalSSM,
    LinearAttention,
    Recurrent,
    SoftmaxAttention,
    TanhRNN,
    make_layer,
)
from iclbook.contextual.measures import (
    attention_reference_gap,
    convergence_curve,
    dynamics_check,
    finetune_comparison,
    finetune_to_convergence,
    gd_linear_attention,
    gd_step_gap,
    half_drop_index,
    linear_dual_gap,
    partial_check,
    patch_transfer,
    position_check,
    prefix_inputs,
    query_inputs,
    refine_setting,
    repeated_sgd_steps,
    sgd_alignment,
    sgd_gradient,
    skip_check,
    stack_check,
    static_patch_transfer,
    theorem_check,
)
from iclbook.contextual.model import BlockStack, ContextualBlock, Variant, make_block, make_stack
from iclbook.contextual.modern import ModernBlock, ModernPatch, RMSNorm, make_modern, modern_check, modern_patch
from iclbook.contextual.patches import (
    Patch,
    appendix_b_weights,
    implicit_patch,
    patched_output,
    prop31_recursion,
    prop31_weights,
    rank_one_update,
    rank_ratio,
    scaled_inverse,
    scaled_norm,
    stack_patched_output,
    stack_patches,
    static_patch,
    update_increments,
)
from iclbook.contextual.training import mse, train_blocks

__all__ = [name for name in dir() if not name.startswith("_")]
