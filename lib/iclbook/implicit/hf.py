"""The same probes on a Hugging Face model (the chapter's path to a real language model).

:mod:`.probe` finds attention layers by their children ``q_proj``, ``k_proj``, ``v_proj`` and
``out_proj`` and finetunes the parameters whose names contain ``k_proj`` or ``v_proj``, so it works
unchanged on OPT and XGLM (the Hugging Face class of the fairseq dense models that the paper used).
CI exercises it offline on :func:`tiny_opt`, a randomly initialised OPT built from a config (no
download) that reads this chapter's word-level token ids. ``transformers`` is imported lazily: the
rest of the library does not need it.
"""

from __future__ import annotations

from iclbook.implicit import tasks


def tiny_opt(seed: int = 0, layers: int = 2, d_model: int = 64, heads: int = 4):
    """A randomly initialised ``OPTForCausalLM`` over this chapter's vocabulary (pre-LN, eager
    attention so that its attention probabilities can be read back), built offline."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(
        vocab_size=len(tasks.VOCAB), hidden_size=d_model, num_hidden_layers=layers,
        ffn_dim=4 * d_model, num_attention_heads=heads, max_position_embeddings=256,
        word_embed_proj_dim=d_model, do_layer_norm_before=True, dropout=0.0,
        attention_dropout=0.0, pad_token_id=tasks.TOKEN_ID[tasks.PAD],
        bos_token_id=tasks.TOKEN_ID[tasks.BOS], eos_token_id=tasks.TOKEN_ID[tasks.SEP],
    )
    config._attn_implementation = "eager"
    return OPTForCausalLM(config).eval()


def pretrained(name: str = "facebook/opt-125m"):
    """A pretrained causal LM and its tokenizer (needs the network once; for Colab or a GPU
    machine, never CI). OPT and XGLM (e.g. ``KoboldAI/fairseq-dense-1.3B``) have the projection
    names the probes need; models with fused projections (GPT-2) or rotary positions (Llama) do
    not fit the probes as written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name).eval(), AutoTokenizer.from_pretrained(name)
