"""Dai et al. (2023), *Why can GPT learn in-context?*: in-context learning as implicit finetuning.

Modules
-------
dual_form   the exact identities behind the paper's dual form (and what the relaxation drops)
tasks       six synthetic classification tasks with the paper's templates, the vocabulary, prompts
codec       examples to token ids: the word vocabulary, or text through a Hugging Face tokenizer
tinylm      a tiny GPT (q/k/v/out_proj names, ALiBi, token mixing, momentum attention), the shipped model
retrain     the command that pretrains the shipped model
probe       scoring by label log-probabilities, recording hooks, K/V finetuning
metrics     Rec2FTP, SimAOU, SimAM, Kendall tau, the critics' variants, bootstrap intervals
experiment  the chapter's protocol (Z, I, F per task), the paper's statistics, the critics' controls
hf          the real-model path: the six data sets, pretrained models, offline stand-ins for CI
"""
