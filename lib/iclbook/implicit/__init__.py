"""Dai et al. (2023), *Why can GPT learn in-context?*: in-context learning as implicit finetuning.

Modules
-------
config      the chapter's sizes per profile and its thresholds (all check fields), named streams
data        six synthetic classification tasks with the paper's templates, the vocabulary, prompts,
            pretraining episodes
model       a tiny GPT (q/k/v/out_proj names, ALiBi, token mixing, momentum attention)
pretrain    its pretraining recipe and loop, readings on held-out episodes, the shipped checkpoints
retrain     the command that pretrains the shipped model (``python -m iclbook.implicit.retrain``)
dual_form   the exact identities behind the paper's dual form (and what the relaxation drops)
codec       examples to token ids: the word vocabulary, or text through a Hugging Face tokenizer
probe       scoring by label log-probabilities, recording hooks, K/V finetuning
metrics     Rec2FTP, SimAOU, SimAM, Kendall tau, the critics' variants, bootstrap intervals
experiment  the chapter's protocol (Z, I, F per task), the paper's statistics, the critics' controls,
            and the readings that decide its ledger rows
hf          the real-model path: the six data sets, pretrained models, offline stand-ins for CI
families    the Hugging Face model families it reads (GPT-2, OPT, XGLM, GPT-NeoX/Pythia): fused
            projections split, float32 master K/V weights and loss scaling in half precision
real        the chapter's statistics and controls on a real model, its time and memory estimate,
            and its ledger rows
tasks, tinylm  old names of data and of model + pretrain, kept for importers outside this package
"""
