"""Li et al. (ICML 2024): a one-layer nonlinear transformer learns binary classification in context.

The data model of the paper (its Section 3, as reconstructed in the book's spec): orthogonal
relevant and irrelevant patterns, tasks that are ordered pairs of relevant patterns, prompts of
====  =========================================================================================
``l`` labelled contexts and a query, and out-of-domain patterns that combine the relevant ones.
====  =========================================================================================
The model is one softmax-attention head and a ReLU MLP with a fixed read-out ``a``:
``F(P) = a^T relu(W_O sum_i attn_i W_V p_i)``, with attention of the query over the contexts
only; prediction ``sign F``; hinge loss; plain SGD.

The package, one idea per module:

==============  =================================================================================
``config``      the chapter's sizes per profile (what is trained and what is checked) and its
                named random streams;
``data``        patterns, the task split, the out-of-domain constructions, the no-match floor,
                prompts;
``model``       the one-layer transformer, the hinge loss and a small multi-layer transformer,
                with their activations as named hook points;
``measures``    the measurements of trained models: errors and the S1 and context-length sweeps,
                Q/K projections and gains, the neurons' geometry, pruning, the lucky neurons;
``complexity``  reading the alpha sweep's learning curves: times to the floor, slopes, intervals;
``baselines``   classical classifiers fitted on a prompt's own context, and k-NN;
``nulls``       what each ledger row is read against: random mixes, relabellings, untrained
                readers, random pruning masks from one forward pass, shuffled alpha labels;
``training``    training through the shared loop and the weight cache (the only module that
                trains; its key covers the measures its stored histories hold).
==============  =================================================================================

Shapes: ``n`` prompts, ``l`` contexts, ``d = d_X + d_Y`` token size, ``m`` neurons.
Everything is re-exported here: ``from iclbook import patterns as pt; pt.train_models(...)``.
"""

from iclbook.patterns.baselines import (
    REFERENCES,
    classical_classifiers,
    classical_errors,
    compare,
    icl_ratio,
    informed_knn_error,
    knn_predict,
    logistic_predict,
    pooled,
    random_context_error,
)
from iclbook.patterns.complexity import (
    bootstrap_slope,
    bootstrap_slopes,
    excluded,
    median_slope,
    pooled_slope,
    times_to,
    two_point_slope,
)
from iclbook.patterns.config import CONFIGS, STREAMS, Config
from iclbook.patterns.data import (
    CONSTRUCTIONS,
    Domain,
    Prompts,
    all_tasks,
    in_domain,
    no_match_floor,
    ood_coefficients,
    oracle_errors,
    out_of_domain,
    sample_prompts,
    sample_stacked,
    scaled_length,
    training_tasks,
)
from iclbook.patterns.measures import (
    angle,
    error,
    errors,
    evaluate,
    feature_geometry,
    first_below,
    initial_activity,
    large_group,
    length_sweep,
    neuron_geometry,
    norm_split,
    ood_sweep,
    progress_measures,
    pruning_checks,
    pruning_mask,
    pruning_sweep,
    qk_gains,
    qk_projections,
    same_pattern_attention,
    separation_auc,
    stacked_errors,
)
from iclbook.patterns.model import OneLayerICL, SmallGPT, hinge, hinge_loss, stacked_margins
from iclbook.patterns.nulls import (
    above_null,
    alpha_shuffles,
    curve_means,
    falls_beyond_noise,
    knn_error,
    knn_length_sweep,
    l_star_ratio,
    masked_scores,
    mix_null,
    null_pass_share,
    pruning_draws,
    pruning_null_share,
    pruning_rules,
    relabel_null,
    relabellings,
    shuffled_auc,
    welch_interval,
    welch_t,
)
from iclbook.patterns.training import error_checkpoints, progress_checkpoints, train_gpt, train_models, train_stacked

__all__ = [name for name in dir() if not name.startswith("_")]
