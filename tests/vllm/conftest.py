"""Tests of the vLLM engine: they run in the `vllm` venv (scripts/install.sh --vllm; CI runs them) and are
skipped where vllm is not installed. Fixtures are tiny fp32 models of every family barkit writes, with a head
dimension of 32 (vLLM's CPU attention needs at least that)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

try:
    import vllm
except ImportError:
    vllm = None
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Where vllm is not installed every test here is skipped, with the reason."""
    if vllm is None:
        skip = pytest.mark.skip(reason="the vllm extra is not installed (scripts/install.sh --vllm)")
        for item in items:
            if item.path.is_relative_to(HERE):
                item.add_marker(skip)

SHAPE = dict(hidden=64, heads=2, kv_heads=1, intermediate=128)
TEXTS = ["the quick brown", "1 + 2 =", "def f(x):", "the lazy dog jumps", "fox", "over the", "3 = 1 +", "return x"]


def _perturb(src: Path, out: Path, seed: int, pattern: str) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    path = out / "model.safetensors"
    tensors, gen = load_file(path), torch.Generator().manual_seed(seed)
    for key in tensors:
        if pattern in key:
            tensors[key] = tensors[key] + torch.randn(tensors[key].shape, generator=gen) * 0.05
    save_file(tensors, path, metadata={"format": "pt"})
    return out


@pytest.fixture(scope="session")
def family_ckpts(tmp_path_factory):
    """{name: checkpoint}: dense Olmo 2, FlexOlmo 2x (branch), a composed FlexOlmo 5x, Mixtral 2x, Qwen3-MoE 2x."""
    from barkit.branch import BranchConfig, branch
    from barkit.compose import ComposeConfig, compose
    from barkit.tiny import make_dense_checkpoint

    root = tmp_path_factory.mktemp("vllm-ckpts")
    out = {}
    for family, name in (("olmo2", "flexolmo-2x"), ("llama", "mixtral-2x"), ("qwen3", "qwen3moe-2x")):
        anchor = make_dense_checkpoint(root / f"{family}-anchor", family, seed=0, **SHAPE)
        base = make_dense_checkpoint(root / f"{family}-base", family, seed=1, **SHAPE)
        out[name] = branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / name), seed=1))
        if family == "olmo2":
            out["olmo2-dense"] = anchor
    domains = [_perturb(out["flexolmo-2x"], root / f"domain{i}", 10 + i, "experts.1") for i in range(4)]
    out["flexolmo-5x"] = compose(ComposeConfig(anchor=str(out["flexolmo-2x"]), out=str(root / "flexolmo-5x"),
                                               experts=[f"d{i}={d}" for i, d in enumerate(domains)]))
    return out


@pytest.fixture(scope="session")
def prompts():
    from barkit.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    return [tok.encode(t, add_special_tokens=False) for t in TEXTS]


@pytest.fixture(scope="session")
def hf_greedy():
    return _hf_greedy


def _hf_greedy(model, prompts: list[list[int]], new_tokens: int, stop_ids: list[int]) -> list[tuple[list, list]]:
    """(tokens, log-probabilities of them) per prompt from HF `generate`, stopping where the engine stops."""
    out = []
    with torch.no_grad():
        for p in prompts:
            gen = model.generate(torch.tensor([p]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=stop_ids,
                                 pad_token_id=-1 if not stop_ids else stop_ids[0], output_scores=True,
                                 return_dict_in_generate=True)
            tokens = gen.sequences[0, len(p):].tolist()
            logps = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(gen.scores, tokens)]
            out.append((tokens, logps))
    return out


@pytest.fixture(scope="session")
def write_jsonl():
    def write(path: Path, rows: list[dict]) -> str:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)
    return write
