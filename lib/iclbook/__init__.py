"""iclbook: the shared library of the book *In-Context Learning, Mechanistically*.

Modules
-------
chapter     how every chapter starts and ends (chapter.start, ch.finish) and the layout rule
runtime     device, seeds and named random streams, execution profile, trained-weight cache
train       one training loop (progress bar, History, checkpoints, batched ensembles)
curves      reading learning curves: crossings, the shape of a jump, power-law slopes
internals   every model's activations read one way, by name
plots       one figure style for the whole book and the plots chapters share
ledger      the claims ledger every chapter ends with, and the Markdown table helper
patterns    Li et al. (2024): a one-layer nonlinear transformer learns classification in context
implicit    Dai et al. (2023): the dual form, a tiny GPT, K/V finetuning and the ICL-vs-FT statistics
induction   Reddy (2024): bursty data and the abrupt formation of an induction head
contextual  Dherin et al. (2025): contextual blocks and their implicit rank-1 weight updates
lenses      chapter 5: one induction network read through the four papers' lenses
"""

__version__ = "0.1.0"
