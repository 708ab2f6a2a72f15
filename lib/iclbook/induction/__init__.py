"""Reddy (ICLR 2024): data dependence and the abrupt formation of an induction head.

Transformers trained on bursty sequences of item-label pairs learn to read labels off their
context; the smallest network that shows it (two attention layers and a ReLU classifier) learns
it abruptly, after a slow phase, when an induction head forms: a first-layer head copies each
item into the label token after it, and a second-layer head lets the query find the label whose
item matches it. A minimal model reduces the head to three scalars, and a phenomenological
model to a loss of three nested logits whose landscape has a cliff.

The package, one idea per module:

============  ===============================================================================
``config``    the chapter's sizes per profile, split into trained and checked fields; its
              random streams; the check of the generator's arguments;
``data``      the task (class means, label vectors, Zipf law), bursty sequences of item-label
              pairs as the author's generator draws them, and the four evaluation sets;
``model``     the author's two-layer attention network and the minimal model, each with its
              hook points (:mod:`iclbook.internals`), on one three-layer ReLU classifier;
``measures``  what is measured on a network at every checkpoint: accuracies, loss, the
              induction-head progress measures, the classifier's activity;
``training``  training runs as batched ensembles through the weight cache (:class:`Run`), the
              data-dependence grid and the members the chapter compares;
``pheno``     the phenomenological model: its loss, gradient and descents;
``analysis``  the rules that turn runs into the numbers the ledger judges (no training code
              imports it, so changing one retrains nothing);
``clamping``  the minimal model trained with a sub-circuit clamped from step 0 (Singh et al.
              2024), and a knock-out of the full network's previous-token attention;
``kinetics``  the minimal model over many seeds as one stacked ensemble (onsets after Nguyen &
              Reddy 2025, in-weight learning by K, the beta2 ablation with item attention).
============  ===============================================================================

Shapes: ``n`` sequences, ``T = 2N + 1`` tokens, ``d = 2 Nmax + 1 + D`` per token, ``L`` labels.
Everything is re-exported here: ``from iclbook import induction as ih; ih.train_runs(...)``.
"""

from iclbook.induction.analysis import (
    bimodality_coefficient,
    bootstrap,
    calibration_summary,
    classify_minimal,
    cliff_ratio,
    context_reader,
    decay_rival,
    eps_sweep,
    exponent_interval,
    first_crossings,
    head_formed,
    head_lead,
    icl_shift,
    jump_rivals,
    lag_window,
    plateau_middle,
    plateau_rivals,
    plateau_share,
    rival_curves,
    scaling_exponent,
    share_at,
    shuffled_exponent,
    skewness,
    skewness_se,
    strategy_shift,
    symmetric_null,
    unjumped,
    worst_seed,
)
from iclbook.induction.clamping import CLAMPS, knock_out, knocked_out_accuracy, train_clamped
from iclbook.induction.config import CONFIGS, STREAMS, Config, check_data_args
from iclbook.induction.data import Sequences, Task, context_label_baseline, eval_sets, make_task, sample, sample_stacked
from iclbook.induction.kinetics import Arm, Lean, LeanRuns, draw_lean, train_lean
from iclbook.induction.measures import EVAL_CHUNK, measure, predict, progress_measures, readout
from iclbook.induction.model import InductionNet, MinimalNet, ReluClassifier, cross_entropy
from iclbook.induction.pheno import pheno_descent, pheno_descents, pheno_gradient, pheno_loss
from iclbook.induction.training import (
    Run,
    comparison_points,
    grid_member,
    grid_variants,
    optimizer_args,
    train_runs,
)

__all__ = [name for name in dir() if not name.startswith("_")]
