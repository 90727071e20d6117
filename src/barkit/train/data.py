"""Training data: text packing, chats with assistant-only loss, domain/general mixing, stratified router
samples, RL prompts, and the step-indexed batch order (files are read by `rows`, chats masked by `chat`).

Everything is tokenized up front into plain lists (toy and research data sets fit in memory), so the
batch of step `s` is a pure function of (data, seed, s): resuming needs only the step number.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from barkit.errors import BarkitError
from barkit.train.chat import assistant_mask, check_messages, check_template
from barkit.train.formats import from_open_instruct, is_open_instruct, row_messages
from barkit.train.rows import read_rows

IGNORE = -100


@dataclass
class Example:
    """One training sequence; labels are IGNORE where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    route_to: int | None = None  # expert every token should be routed to (route supervision); None: no target

    @property
    def num_targets(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE)


@dataclass
class RLPrompt:
    prompt_ids: list[int]
    verifier: str
    columns: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)


def column(where: str, row: dict, key: str, kind: type) -> object:
    """`row[key]`, which must be there and be a `kind`; else one line naming the row."""
    if key not in row:
        raise BarkitError(f"{where}: missing column '{key}'")
    if not isinstance(row[key], kind):
        raise BarkitError(f"{where}: column '{key}' must be a {kind.__name__}")
    return row[key]


def require_eos(tokenizer) -> None:
    if tokenizer.eos_token_id is None:
        raise BarkitError("the model's tokenizer has no eos token; packing needs one to separate documents")


class PackedText(Sequence):
    """Packed text sequences held as one int32 array (4 bytes a token, where lists of Python ints took ~139 for
    ids and labels together): every rank of a multi-process run holds a copy. Labels are the ids."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> Example:
        ids = self.array[index].tolist()
        return Example(ids, list(ids))


def pack_text(paths: list[str], tokenizer, seq_len: int, columns: dict | None = None,
              rows_per_batch: int = 1024) -> PackedText:
    """Concatenate `text` rows (each ending in EOS) and cut them into full sequences of seq_len tokens."""
    require_eos(tokenizer)
    pieces: list[np.ndarray] = []
    for path in paths:
        texts = [column(where, row, "text", str) for where, row in read_rows(path, columns)]
        for start in range(0, len(texts), rows_per_batch):
            for ids in tokenizer(texts[start:start + rows_per_batch], add_special_tokens=False)["input_ids"]:
                pieces.append(np.asarray([*ids, tokenizer.eos_token_id], dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    if len(stream) < seq_len:
        raise BarkitError(f"{', '.join(map(str, paths))}: only {len(stream)} tokens, fewer than one sequence "
                          f"(seq_len={seq_len})")
    usable = len(stream) // seq_len * seq_len
    return PackedText(stream[:usable].reshape(-1, seq_len))


def chat_example(where: str, row: dict, tokenizer, seq_len: int) -> tuple[Example, bool]:
    """One chat row -> (example with loss on assistant tokens only, whether it was truncated to seq_len)."""
    messages = check_messages(where, row_messages(row), need_assistant=True)
    kwargs = {"tools": row["tools"]} if row.get("tools") else {}
    ids, mask = assistant_mask(where, messages, tokenizer, kwargs)
    truncated = len(ids) > seq_len
    ids, mask = ids[:seq_len], mask[:seq_len]
    return Example(ids, [t if m else IGNORE for t, m in zip(ids, mask)]), truncated


def tokenize_chats(path: str | Path, tokenizer, seq_len: int,
                   columns: dict | None = None) -> tuple[list[Example], int]:
    """Chat rows -> examples with loss on assistant tokens only; returns (examples, truncated count)."""
    check_template(tokenizer)
    examples, truncated = [], 0
    for where, row in read_rows(path, columns):
        example, cut = chat_example(where, row, tokenizer, seq_len)
        truncated += cut
        if example.num_targets:
            examples.append(example)
    if not examples:
        raise BarkitError(f"{path}: no example keeps an assistant token within seq_len={seq_len}")
    return examples, truncated


class Concatenated(Sequence):
    """Several sequences of examples read as one, without copying them."""

    def __init__(self, parts: list[Sequence]):
        self.parts = parts
        self.starts = list(itertools.accumulate([0, *(len(p) for p in parts)]))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int):
        part = bisect.bisect_right(self.starts, index) - 1
        return self.parts[part][index - self.starts[part]]


def take_indices(size: int, count: int, seed: int) -> list[int]:
    """`count` indices into `size` items drawn without replacement (whole passes repeated when count > size)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while len(out) < count:
        order = torch.randperm(size, generator=gen).tolist()
        out.extend(order[: count - len(out)])
    return out


def take(examples: Sequence, count: int, seed: int) -> list:
    """`count` examples drawn without replacement (whole passes repeated when count > len)."""
    return [examples[i] for i in take_indices(len(examples), count, seed)]


class Mixture(Sequence):
    """Every domain example, then the drawn general ones, read on demand (token shards stay on disk)."""

    def __init__(self, domain: Sequence, general: Sequence, indices: list[int]):
        self.domain, self.general, self.indices = domain, general, indices

    def __len__(self) -> int:
        return len(self.domain) + len(self.indices)

    def __getitem__(self, index: int):
        n = len(self.domain)
        return self.domain[index] if index < n else self.general[self.indices[index - n]]


def mix(domain: Sequence, general: Sequence, ratio: float, seed: int) -> Sequence:
    """Domain examples plus general ones so that `ratio` of the mix is general (BAR's SFT mixture).

    >>> mixed = mix(list(range(30)), list(range(100, 200)), 0.25, seed=0)
    >>> len(mixed), mixed[29], mixed[30] >= 100
    (40, 29, True)
    """
    if ratio <= 0 or not len(general):
        return domain
    n_general = round(len(domain) * ratio / (1 - ratio))
    return Mixture(domain, general, take_indices(len(general), n_general, seed))


class Routed(Sequence):
    """`examples` with every token labelled for route supervision to `expert` (see LMObjective), on demand."""

    def __init__(self, examples: Sequence, expert: int):
        self.examples, self.expert = examples, expert

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        e = self.examples[index]
        return Example(e.input_ids, e.labels, self.expert)


def with_route(examples: Sequence, expert: int) -> Sequence:
    """Examples labelled for route supervision: copies of a list, a view of anything else (token shards)."""
    if isinstance(examples, list):
        return [Example(e.input_ids, e.labels, expert) for e in examples]
    return Routed(examples, expert)


def _route_targets(examples: list[Example], width: int) -> torch.Tensor | None:
    """[rows, width] expert targets (IGNORE where none), rows laid out like collate(): one example per row."""
    if all(e.route_to is None for e in examples):
        return None
    out = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        if e.route_to is not None:
            out[i, :len(e.input_ids)] = e.route_to
    return out


def stratified_sample_per_file(per_file: list[list], fraction: float, min_rows: int, seed: int) -> list[list]:
    """`fraction` of each file's examples (at least `min_rows`, at most all of them), file by file."""
    return [take(examples, min(len(examples), max(min_rows, math.ceil(fraction * len(examples)))), seed + i)
            for i, examples in enumerate(per_file)]


def stratified_sample(per_file: list[list], fraction: float, min_rows: int, seed: int) -> list:
    """`stratified_sample_per_file`, concatenated.

    >>> len(stratified_sample([list(range(1000))], 0.05, 16, 0)), len(stratified_sample([[1, 2]], 0.05, 16, 0))
    (50, 2)
    """
    return [e for part in stratified_sample_per_file(per_file, fraction, min_rows, seed) for e in part]


def rl_rows(path: str | Path, verifier_columns: dict[str, tuple[str, ...]],
            columns: dict | None = None) -> list[tuple[str, list[dict], str, dict]]:
    """(where, prompt messages, verifier, its columns) per rl-prompt row: barkit's own rows (`prompt`, a known
    `verifier` and its columns) or open-instruct RLVR rows (`messages`, `ground_truth`, `dataset`), mapped by
    `OPEN_INSTRUCT_VERIFIERS`. Checked without a tokenizer, so `barkit reward` can audit a prompt set."""
    from barkit.eval.verifiers import column_type_problem

    out = []
    for where, row in read_rows(path, columns):
        if is_open_instruct(row):
            row = from_open_instruct(where, row)
        messages = check_messages(where, row.get("prompt"), need_assistant=False)
        if messages[-1]["role"] == "assistant":
            raise BarkitError(f"{where}: 'prompt' must not end with an assistant turn")
        name = column(where, row, "verifier", str)
        if name not in verifier_columns:
            raise BarkitError(f"{where}: unknown verifier '{name}' (known: {', '.join(sorted(verifier_columns))})")
        missing = [c for c in verifier_columns[name] if c not in row]
        if missing:
            raise BarkitError(f"{where}: verifier '{name}' needs column '{missing[0]}'")
        if problem := column_type_problem(row):
            raise BarkitError(f"{where}: {problem}")
        out.append((where, messages, name, {k: v for k, v in row.items() if k not in ("prompt", "verifier")}))
    return out


def load_rl_prompts(path: str | Path, tokenizer, max_prompt_tokens: int,
                    verifier_columns: dict[str, tuple[str, ...]], columns: dict | None = None) -> list[RLPrompt]:
    """`rl_rows` with each prompt rendered by the chat template and checked against the length budget."""
    prompts = []
    for where, messages, name, extra in rl_rows(path, verifier_columns, columns):
        kwargs = {"tools": extra["tools"]} if extra.get("tools") else {}
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                 return_dict=True, **kwargs)["input_ids"])
        if len(ids) > max_prompt_tokens:
            raise BarkitError(f"{where}: prompt is {len(ids)} tokens, more than seq_len - "
                              f"rl.max_new_tokens = {max_prompt_tokens}")
        prompts.append(RLPrompt(ids, name, extra, messages))
    return prompts


class StepOrder:
    """The examples of optimizer step `s`: consecutive slices of a stream of per-epoch permutations."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        """One epoch's permutation, held as a tensor (8 bytes an item: a streamed corpus of 12M sequences
        needs 100 MB for it, where a Python list would need ~4x that)."""
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.size, generator=gen)}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [int(self._perm(pos // self.size)[pos % self.size]) for pos in range(start, start + self.batch_size)]

    def steps_for(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.size / self.batch_size))


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor | None]:
    """Right-pad to the longest example; attention_mask is None when nothing is padded (faster path)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": None if bool(mask.all()) else mask,
            "route_targets": _route_targets(examples, width)}


def pack_rows(examples: list[Example], width: int) -> list[list[Example]]:
    """First-fit-decreasing bins of examples whose lengths sum to at most `width` (order-independent).

    >>> [[len(e.input_ids) for e in row] for row in pack_rows([Example([0] * n, [0] * n) for n in (3, 5, 2, 4)], 8)]
    [[5, 3], [4, 2]]
    """
    rows: list[list[Example]] = []
    free: list[int] = []
    for example in sorted(examples, key=lambda e: -len(e.input_ids)):
        n = len(example.input_ids)
        slot = next((i for i, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append([example])
            free.append(width - n)
        else:
            rows[slot].append(example)
            free[slot] -= n
    return rows


def collate_packed(examples: list[Example], pad_id: int, width: int) -> dict[str, torch.Tensor | None]:
    """Several chats per row: position ids restart at each chat, which makes transformers build a block-
    diagonal causal mask (no attention across chats), so the loss equals the padded batch's while padding
    only each row's tail. A chat's first label is dropped: unpacked, position 0 is never a target either."""
    rows = pack_rows(examples, width)
    length = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    routes = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, start:start + n] = torch.tensor(e.input_ids)
            labels[r, start + 1:start + n] = torch.tensor(e.labels[1:])
            positions[r, start:start + n] = torch.arange(n)
            if e.route_to is not None:
                routes[r, start:start + n] = e.route_to
            start += n
        positions[r, start:] = torch.arange(length - start)  # the padded tail is its own (ignored) sequence
    supervised = any(e.route_to is not None for e in examples)
    return {"input_ids": ids, "labels": labels, "attention_mask": None, "position_ids": positions,
            "route_targets": routes if supervised else None}
