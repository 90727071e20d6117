"""The toy world's tokenizer: byte-level BPE trained on the training files, with a chat template.

Digits are always single tokens (arithmetic is far easier to learn that way). Assistant turns end with
`<|end|>` and are wrapped in `{% generation %}` so SFT can mask everything else; generation should stop
at `<|end|>` (see `generation_eos_ids`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from barkit.errors import BarkitError
from barkit.toy.world.files import replace_dir

EOS, PAD, SYSTEM, USER, ASSISTANT, END = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>",
                                         "<|end|>")
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
SPECIAL_TOKENS = (EOS, PAD, SYSTEM, USER, ASSISTANT, END, TOOL_OPEN, TOOL_CLOSE)  # ids 0..7 in this order
MIN_VOCAB = 300  # 256 bytes + specials + a few merges
MAX_VOCAB = 8192

# Tools are rendered compactly, as {"name": ..., "arguments": [argument names]} (the shape of a call):
# full JSON schemas with descriptions would triple the prompt length of tiny models' tool-use examples.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system=none, start=0) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}{%- set ns.start = 1 -%}"
    "{%- endif -%}"
    "{%- if ns.system is not none or tools -%}"
    "<|system|>"
    "{%- if ns.system is not none -%}{{ ns.system }}{%- endif -%}"
    "{%- if tools -%}"
    "{%- if ns.system is not none -%}{{ '\\n' }}{%- endif -%}"
    "{{ 'Tools:' }}"
    "{%- for tool in tools -%}"
    "{%- set f = tool['function'] if tool['function'] is defined else tool -%}"
    "{%- set props = (f.get('parameters') or {}).get('properties') or {} -%}"
    "{{ '\\n' }}{{ {'name': f['name'], 'arguments': props | list} | tojson }}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "<|end|>"
    "{%- endif -%}"
    "{%- for m in messages[ns.start:] -%}"
    "{%- if m['role'] == 'user' -%}<|user|>{{ m['content'] }}<|end|>"
    "{%- elif m['role'] == 'assistant' -%}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{%- elif m['role'] == 'system' -%}<|system|>{{ m['content'] }}<|end|>"
    "{%- else -%}{{ raise_exception('unsupported chat role: ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def render_tools(tools: list[dict]) -> str:
    """The system-turn text the chat template writes for a tools list (used to train the BPE on it).

    >>> render_tools([{"name": "f", "description": "Do f.", "parameters": {"properties": {"x": {}}}}])
    'Tools:\\n{"name": "f", "arguments": ["x"]}'
    """
    lines = ["Tools:"]
    for tool in tools:
        f = tool.get("function", tool)
        props = (f.get("parameters") or {}).get("properties") or {}
        lines.append(json.dumps({"name": f["name"], "arguments": list(props)}, ensure_ascii=False))
    return "\n".join(lines)


def _row_texts(row: dict) -> Iterator[str]:
    if "text" in row:
        yield row["text"]
    for message in row.get("messages") or row.get("prompt") or []:
        yield message["content"]
    if row.get("tools"):
        yield render_tools(row["tools"])


def training_texts(data_dir: Path) -> Iterator[str]:
    """Every string of the training files (eval/ excluded), in sorted file order."""
    files = sorted(p for p in data_dir.glob("*.jsonl"))
    if not files:
        raise BarkitError(f"{data_dir}: no training .jsonl files to train a tokenizer on")
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BarkitError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
                yield from _row_texts(row)


def _bpe(data_dir: Path, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_texts(data_dir), trainer)
    return tok


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The HF tokenizer around a trained BPE: special tokens, no space clean-up (exact round trips), template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, extra_special_tokens=list(SPECIAL_TOKENS[2:]),
        clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE,
    )


def train_tokenizer(data_dir: Path, out_dir: Path, vocab_size: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on data_dir's training files and save an HF tokenizer to out_dir (atomically)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise BarkitError(f"vocab_size {vocab_size}: must be between {MIN_VOCAB} and {MAX_VOCAB}")
    tokenizer = wrap(_bpe(data_dir, vocab_size))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer.save_pretrained(tmp, save_jinja_files=False)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def generation_eos_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids generation should stop at: the end-of-turn marker first, then end-of-text."""
    return [tokenizer.convert_tokens_to_ids(END), tokenizer.convert_tokens_to_ids(EOS)]


def _row_length(tokenizer: PreTrainedTokenizerFast, row: dict) -> int:
    if "text" in row:
        return len(tokenizer(row["text"])["input_ids"])
    messages = row.get("messages") or row["prompt"]
    prompt_only = messages[-1]["role"] != "assistant"
    ids = tokenizer.apply_chat_template(messages, tools=row.get("tools"), add_generation_prompt=prompt_only)
    return len(ids["input_ids"])
