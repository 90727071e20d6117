"""`barkit generate MODEL --prompt TEXT` and `barkit chat MODEL`: responses with per-expert routing attribution.

Attribution is measured on the whole exchange (prompt and response) by one extra forward pass, and reported
per named expert, overall and per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from barkit.checkpoint import CheckpointReader
from barkit.errors import BarkitError

POSITIONAL = ("model",)


@dataclass
class GenerateConfig:
    model: str = field(metadata={"help": "checkpoint directory"})
    prompt: str | None = field(default=None, metadata={"help": "user message (generate)"})
    system: str | None = None
    keep: list[str] | None = field(default=None, metadata={"help": "experts to keep at load time (opt-out)"})
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    attribution: bool = field(default=True, metadata={"help": "report routing weight per expert"})
    per_layer: bool = False
    device: str = field(default="auto", metadata={"help": "auto (the GPU when present, else the CPU), cpu, cuda..."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU, fp32 on the CPU), float32, bfloat16"})


def load_for_generation(cfg: GenerateConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from barkit.eval.generation import resolve_placement

    placed, dtype = resolve_placement(cfg.device, cfg.dtype)
    CheckpointReader(cfg.model).check_files()  # a clear error for a missing, config-less or truncated model
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
    if cfg.keep:
        from barkit.select import load_selected

        model = load_selected(cfg.model, cfg.keep, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype, use_safetensors=True,
                                                     local_files_only=True)
    return model.to(placed).eval(), tokenizer


def respond(model, tokenizer, messages: list[dict], cfg: GenerateConfig) -> tuple[str, str | None]:
    """Generate one reply; return it with an attribution line (None for dense models)."""
    from barkit.attribution import describe_routing, expert_names, is_moe, routing_weights
    from barkit.eval.generation import GenerationSettings, HFBackend

    backend = HFBackend(model, tokenizer, show_progress=False)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    (reply,) = backend.generate([messages], [None], settings)[0]
    if not (cfg.attribution and is_moe(model)):
        return reply, None
    text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    weights_LE = routing_weights(model, ids).float().cpu()
    names = expert_names(model)
    lines = [describe_routing(weights_LE, names)]
    if cfg.per_layer:
        lines += [f"  layer {i}: " + ", ".join(f"{n} {100 * w:.0f}%" for n, w in zip(names, row.tolist()))
                  for i, row in enumerate(weights_LE)]
    return reply, "\n".join(lines)


def _base_messages(cfg: GenerateConfig) -> list[dict]:
    return [{"role": "system", "content": cfg.system}] if cfg.system else []


def run(cfg: GenerateConfig) -> None:
    if not cfg.prompt:
        raise BarkitError("config key 'prompt': required (or use `barkit chat` for an interactive session)")
    model, tokenizer = load_for_generation(cfg)
    reply, attribution = respond(model, tokenizer, _base_messages(cfg) + [{"role": "user", "content": cfg.prompt}],
                                 cfg)
    print(reply)
    if attribution:
        print(f"[{attribution}]")


def run_chat(cfg: GenerateConfig) -> None:
    """Interactive loop; an empty line or EOF ends it."""
    model, tokenizer = load_for_generation(cfg)
    messages = _base_messages(cfg)
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            break
        if not user:
            break
        messages.append({"role": "user", "content": user})
        reply, attribution = respond(model, tokenizer, messages, cfg)
        messages.append({"role": "assistant", "content": reply})
        print(f"model> {reply}")
        if attribution:
            print(f"[{attribution}]")
