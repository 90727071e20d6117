"""Tiny random dense checkpoints (Olmo 2, Llama, Mistral) for tests, examples and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("olmo2", "llama", "mistral", "qwen2", "qwen3")


CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in milliseconds on a few sentences (no hub needed), with a chat
    template whose assistant turns are marked for assistant-only losses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>",
                                                                  "<|assistant|>", "<|end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog", "1 + 2 = 3", "def f(x): return x"],
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
                                   chat_template=CHAT_TEMPLATE)


def tiny_config(family: str = "olmo2", vocab_size: int = 300, hidden: int = 32, layers: int = 2,
                intermediate: int = 64, heads: int = 4, kv_heads: int = 2):
    from transformers import LlamaConfig, MistralConfig, Olmo2Config, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=256, pad_token_id=1, eos_token_id=0, bos_token_id=None,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    if family == "olmo2":
        return Olmo2Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 123456.0})
    if family == "llama":
        return LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 654321.0})
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None,
                             rope_parameters={"rope_type": "default", "rope_theta": 98765.0})
    if family == "qwen2":
        return Qwen2Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=hidden // heads, rope_parameters={"rope_type": "default",
                                                                              "rope_theta": 1000000.0})
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def make_dense_checkpoint(path: str | Path, family: str = "olmo2", seed: int = 0, dtype=torch.float32,
                          **shape) -> Path:
    """Save a randomly initialised dense model (weights perturbed so norms are not all ones) with a tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size=len(tokenizer), **shape))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.to(dtype).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return Path(path)


def save_like(src_dir: str | Path, tensors: dict[str, torch.Tensor], out: str | Path) -> Path:
    """Write `tensors` as a checkpoint with `src_dir`'s config and tokenizer (a stand-in for a trained model)."""
    import shutil

    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(src_dir) / name, out / name)
    return out
