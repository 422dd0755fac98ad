"""Tiny random decoder-only LMs (Llama, Qwen2, GPT-2, StarCoder2) with byte-level BPE tokenizers, offline.

Each family's tokenizer mimics the real one's specials: Llama adds a BOS and has no pad token,
GPT-2 and StarCoder2 have `<|endoftext|>` as EOS and no pad token, Qwen2 pads with `<|endoftext|>`.
"""
from __future__ import annotations

from pathlib import Path

import torch

WEIGHT_STD = 0.5  # of every weight matrix (and 0.1 for biases)
FAMILIES = ("llama", "qwen2", "gpt2", "starcoder2")

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "function add(a, b) {\n  return a + b;\n}\n",
    "Return the sum of two numbers.", "Parse a URL into its parts.", "Sort the list in place.",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "for (let i = 0; i < n; i++) { total += xs[i]; }",
    "Description: Code: if else while for return import from const let var",
] * 4

_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tokenizer(family: str, vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"llama": ["<unk>", "<s>", "</s>"], "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                "gpt2": ["<|endoftext|>"], "starcoder2": ["<|endoftext|>"]}[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXTS, trainer=trainer)
    if family == "llama":  # Llama prepends BOS
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if family == "qwen2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                       additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=_CHAT)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def make_config(family: str, vocab_size: int, tokenizer=None):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Starcoder2Config

    eos = tokenizer.eos_token_id if tokenizer is not None else 0
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, eos_token_id=eos, bos_token_id=eos)
    if family == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if family == "starcoder2":
        return Starcoder2Config(**common, use_bias=True, residual_dropout=0.0, embedding_dropout=0.0)
    return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=4, n_positions=256, eos_token_id=eos, bos_token_id=eos,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_causal(family: str, seed: int = 0, **config):
    """(frozen model in eval mode, tokenizer) of a tiny random `family` LM; `config` overrides config
    fields (e.g. num_hidden_layers=2, max_position_embeddings=2048)."""
    from transformers import AutoModelForCausalLM

    from codecl.model.base import freeze
    from codecl.model.causal import configure_tokenizer

    tokenizer = make_tokenizer(family)
    torch.manual_seed(seed)
    model_config = make_config(family, len(tokenizer), tokenizer)
    for name, value in config.items():
        setattr(model_config, name, value)
    model = AutoModelForCausalLM.from_config(model_config)
    with torch.no_grad():  # decisive logits that depend on the whole prompt: the default init is near-uniform
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, WEIGHT_STD)
            elif name.endswith("bias"):  # nonzero biases: an identity block must zero its output biases too
                p.normal_(0, 0.1)
    return freeze(model).eval(), configure_tokenizer(tokenizer)


def save_causal(family: str, folder: Path, seed: int = 0, **config) -> Path:
    """A `save_pretrained` folder (model + tokenizer) of a tiny random `family` LM (`config`: as `make_causal`)."""
    model, tokenizer = make_causal(family, seed, **config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
