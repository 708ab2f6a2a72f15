"""iclbook: the shared library of the book *In-Context Learning, Mechanistically*.

Modules
-------
runtime     device, seeds, execution profile, trained-weight cache
train       one training loop (progress bar, history, checkpoints, batched ensembles)
plots       one figure style for the whole book and the plots chapters share
ledger      the claims ledger every chapter ends with
patterns    Li et al. (2024): a one-layer nonlinear transformer learns classification in context
contextual  Dherin et al. (2025): contextual blocks and their implicit rank-1 weight updates
implicit    Dai et al. (2023): the dual form, a tiny GPT, K/V finetuning and the ICL-vs-FT statistics
"""

__version__ = "0.1.0"
