"""Generation engines for evaluation and chat: HF `generate`, or vLLM where the `vllm` extra is installed.

A backend turns chat prompts into completions; everything above it (scoring, reports) is backend-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError

END_MARKERS = ("<|end|>",)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    num_samples: int = 1
    batch_size: int = 32
    seed: int = 0


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[dict]], tools: list[list | None],
                 settings: GenerationSettings) -> list[list[str]]:
        """One list of `num_samples` completions per prompt."""


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_placement(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Where and in what precision to run a model, as training decides it: `auto` is the GPU in bf16 where one
    is present (fp16 on a GPU without bf16), else the CPU in fp32; either can be given explicitly.

    >>> resolve_placement("cpu", "auto")
    (device(type='cpu'), torch.float32)
    """
    if dtype not in DTYPES:
        raise BarkitError(f"config key 'dtype': unknown dtype '{dtype}' (known: {', '.join(DTYPES)})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        placed = torch.device(device)
    except RuntimeError:
        raise BarkitError(f"config key 'device': unknown device '{device}' (e.g. auto, cpu, cuda, cuda:1)") from None
    if dtype == "auto":
        if placed.type != "cuda":
            return placed, torch.float32
        return placed, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return placed, getattr(torch, dtype)


def stop_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[m] for m in END_MARKERS if m in vocab]
    return sorted(set(ids))


def render_prompt(tokenizer, messages: list[dict], tools: list | None) -> str:
    if not tokenizer.chat_template:
        raise BarkitError(f"{tokenizer.name_or_path}: the tokenizer has no chat template; chat prompts need one")
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def clean_completion(text: str, tokenizer) -> str:
    """Cut at the first end marker and drop padding, keeping tool-call markers the verifiers need."""
    for marker in (*END_MARKERS, tokenizer.eos_token or "\x00"):
        text = text.split(marker)[0]
    if tokenizer.pad_token:
        text = text.replace(tokenizer.pad_token, "")
    return text.strip()


def completion_mask(completion_ids: torch.Tensor, stop_ids: list[int], pad_id: int) -> torch.Tensor:
    """1 for generated tokens up to and including the first stop token, 0 after it.

    >>> completion_mask(torch.tensor([[5, 2, 9, 1], [5, 6, 7, 8]]), [2], 1).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 1]]
    """
    is_stop = torch.isin(completion_ids, torch.tensor(stop_ids, dtype=completion_ids.dtype))
    after_stop = (is_stop.cumsum(1) - is_stop.long()) > 0
    return (~after_stop).long()



class HFBackend:
    """Batched `model.generate` with left padding; greedy unless a temperature is set."""

    def __init__(self, model, tokenizer, show_progress: bool = True):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.generated_tokens = 0
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.show_progress = show_progress

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "auto", device: str = "auto", **kw) -> "HFBackend":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        placed, torch_dtype = resolve_placement(device, dtype)
        CheckpointReader(path).check_files()  # a clear error for a missing, config-less or truncated model
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=True,
                                                         local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BarkitError(f"{path}: cannot load model for evaluation ({str(exc).splitlines()[0]})") from None
        return cls(model.to(placed), tokenizer, **kw)

    @torch.no_grad()
    def generate(self, prompts, tools, settings: GenerationSettings) -> list[list[str]]:
        texts = [render_prompt(self.tokenizer, m, t) for m, t in zip(prompts, tools)]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
        out: list[list[str]] = [[] for _ in texts]
        torch.manual_seed(settings.seed)
        stops = stop_token_ids(self.tokenizer)
        sample = settings.temperature > 0
        bar = tqdm(total=len(texts), desc="generate", disable=not self.show_progress, leave=False)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.model.device)
            gen = self.model.generate(
                **enc, max_new_tokens=settings.max_new_tokens, do_sample=sample,
                temperature=settings.temperature if sample else None, top_p=settings.top_p if sample else None,
                num_return_sequences=settings.num_samples, eos_token_id=stops,
                pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:].cpu()
            self.generated_tokens += int(completion_mask(new, stops, self.tokenizer.pad_token_id).sum())
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=False)
            for j, text in enumerate(decoded):
                out[idx[j // settings.num_samples]].append(clean_completion(text, self.tokenizer))
            bar.update(len(idx))
        bar.close()
        return out


class VLLMBackend:
    """vLLM (`barkit.vllm_engine`, the `vllm` extra): prompts rendered and tokenised by the checkpoint's own
    tokenizer exactly as for `HFBackend`, completions decoded and cleaned the same way, so the two engines differ
    only in how they compute (greedy scores match on the toy suites: tests/vllm)."""

    def __init__(self, path: str, dtype: str = "auto", max_model_len: int | None = None):
        from transformers import AutoTokenizer

        from barkit.vllm_engine import VLLMEngine, require_vllm

        require_vllm()
        _, torch_dtype = resolve_placement("auto", dtype)  # vLLM places itself: on the GPU when there is one
        CheckpointReader(path).check_files()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.engine = VLLMEngine(path, dtype=str(torch_dtype).removeprefix("torch."), max_model_len=max_model_len)
        self.generated_tokens = 0

    def generate(self, prompts, tools, settings: GenerationSettings) -> list[list[str]]:
        ids = [self.tokenizer(render_prompt(self.tokenizer, m, t), add_special_tokens=False)["input_ids"]
               for m, t in zip(prompts, tools)]
        greedy = settings.temperature <= 0
        out = self.engine.generate(ids, n=settings.num_samples, greedy=greedy, max_new_tokens=settings.max_new_tokens,
                                   temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                   stop_ids=stop_token_ids(self.tokenizer))
        self.generated_tokens += sum(len(s.token_ids) for samples in out for s in samples)
        return [[clean_completion(self.tokenizer.decode(s.token_ids, skip_special_tokens=False), self.tokenizer)
                 for s in samples] for samples in out]

    def close(self) -> None:
        self.engine.close()


ENGINES = ("hf", "vllm")


def make_backend(name: str, path: str, dtype: str = "auto", device: str = "auto") -> GenerationBackend:
    if name == "hf":
        return HFBackend.from_pretrained(path, dtype, device)
    if name == "vllm":
        return VLLMBackend(path, dtype)
    raise BarkitError(f"unknown generation engine '{name}' (known: {', '.join(ENGINES)})")
