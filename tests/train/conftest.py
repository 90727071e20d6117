"""Tiny 2-expert checkpoints (FlexOlmo and Mixtral branch outputs) and tiny synthetic data files."""

import json

import pytest
import torch

from barkit.branch import BranchConfig, branch
from barkit.config import load_config
from barkit.eval import verifiers
from barkit.train import StageConfig, train

FAMILIES = ("olmo2", "llama")


@pytest.fixture(scope="session")
def moe_ckpts(dense_ckpts, tmp_path_factory):
    """{family: 2-expert MoE dir}: expert 0 from the anchor, expert 1 from the base."""
    root = tmp_path_factory.mktemp("moe")
    out = {}
    for family in FAMILIES:
        anchor, base = dense_ckpts[family]
        out[family] = branch(BranchConfig(anchor=str(anchor), base=str(base), out=str(root / family), seed=1))
    return out


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def chat(user, assistant):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    words = ["fox", "dog", "brown", "lazy", "quick", "jumps"]
    return {
        "text": _write(root / "text.jsonl", [{"text": f"the {words[i % 6]} {i} jumps over {i + 1} dogs"}
                                             for i in range(120)]),
        "chat": _write(root / "chat.jsonl", [chat(f"{i} + 1", str(i + 1)) for i in range(40)]),
        "general": _write(root / "general.jsonl", [chat(f"name a {w}", f"the {w}") for w in words]),
        "rl": _write(root / "rl.jsonl", [{"prompt": [{"role": "user", "content": f"say e {i}"}],
                                          "verifier": "count_e", "target": "e"} for i in range(16)]),
    }


def count_e(completions, target, **_):
    """A test verifier: the share of characters equal to the target letter (varied rewards, dense signal)."""
    return [min(1.0, c.count(t) / max(len(c), 1) * 4) if c else 0.0 for c, t in zip(completions, target)]


@pytest.fixture
def test_verifier(monkeypatch):
    monkeypatch.setitem(verifiers.VERIFIERS, "count_e", count_e)
    monkeypatch.setitem(verifiers.VERIFIER_COLUMNS, "count_e", ("target",))


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_stage():
    """run_stage(out, stage, model, data, **config) with small defaults for tiny models."""
    return _run_stage


def _run_stage(out, stage, model, data, **kw):
    """Top-level keys as keywords, sections as dicts (optim={"lr": ...}); merged over small defaults."""
    values = {"progress": False, "batch_size": 8, "steps": 4,
              "distributed": {"threads": 1},  # tiny models gain nothing from more, and stay fast on a busy machine
              "sequences": {"seq_len": 32}, "optim": {"lr": 1e-2}}
    if stage == "rl":
        values["rl"] = {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8}
    for key, value in kw.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    values.update(stage=stage, model=str(model), data=[data] if isinstance(data, str) else data, out=str(out))
    return train(load_config(StageConfig, values=values))
