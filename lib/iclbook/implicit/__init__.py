"""Dai et al. (2023), *Why can GPT learn in-context?*: in-context learning as implicit finetuning.

Modules
-------
dual_form   the exact identities behind the paper's dual form (and what the relaxation drops)
tasks       six synthetic classification tasks with the paper's templates, the vocabulary, prompts
tinylm      a tiny GPT (q/k/v/out_proj names, ALiBi, token mixing, momentum attention)
probe       scoring by label log-probabilities, recording hooks, K/V finetuning, the shipped model
metrics     Rec2FTP, SimAOU, SimAM, Kendall tau, the critics' variants, bootstrap intervals
"""
