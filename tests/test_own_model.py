"""docs/own-model.md's pipeline, run as written without the toy world: a locally built Olmo-2-shaped pair
(few layers, small width, random weights, the Olmo 2 Instruct chat template), Tulu-format SFT rows,
open-instruct RLVR rows, the recipe's stage sections with sizes shrunk; branch -> midtrain -> SFT -> RL ->
compose -> route -> eval. Also: the recipe holds BAR's published hyperparameters."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from barkit.config import load_config
from barkit.errors import BarkitError
from barkit.eval.benchmarks import fetch
from barkit.tiny import make_dense_checkpoint
from barkit.train import StageConfig

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "own-model.md"
RECIPE = ROOT / "configs" / "recipes" / "bar-olmo2-7b.yaml"
OLMO2_TEMPLATE = (ROOT / "tests" / "train" / "templates" / "olmo2_instruct.jinja").read_text()


def _resolved(stage: str) -> StageConfig:
    return load_config(StageConfig, RECIPE, {"stage": stage, "model": "m", "data": ["d"], "out": "o"}).resolve()


def test_the_recipe_holds_bar_s_published_hyperparameters():
    mid, sft, rl, router = (_resolved(s) for s in ("midtrain", "sft", "rl", "router"))
    for cfg in (mid, sft, rl, router):
        assert (cfg.optim.betas, cfg.optim.weight_decay, cfg.optim.max_grad_norm) == ([0.9, 0.95], 0.0, 1.0)
    assert (mid.optim.lr, mid.schedule.kind, mid.schedule.warmup_steps) == (9e-4, "cosine", 2000)
    assert (sft.optim.lr, sft.epochs, sft.schedule.kind, sft.schedule.warmup_ratio) == (1e-4, 2, "linear", 0.03)
    assert sft.schedule.min_lr_ratio == 0.0  # linear decay to 0
    assert (router.optim.lr, router.epochs, router.schedule.warmup_ratio, router.mixture.sample_fraction) == \
        (1e-4, 2, 0.03, 0.05)
    assert (rl.optim.lr, rl.schedule.kind, rl.rl.num_generations, rl.rl.beta, rl.rl.epsilon_high) == \
        (6e-7, "constant", 8, 0.0, 0.272)
    assert load_config(StageConfig, RECIPE, {"stage": "sft", "model": "m", "data": ["d"], "out": "o"},
                       ["optim.lr=3e-5"]).optim.lr == 3e-5  # flags win over the recipe


def test_a_recipe_with_an_unknown_stage_is_one_clear_error(tmp_path):
    bad = tmp_path / "recipe.yaml"
    bad.write_text("stages:\n  finetune: {epochs: 1}\n")
    with pytest.raises(BarkitError, match="recipe.yaml: unknown stage 'finetune' under 'stages'"):
        load_config(StageConfig, bad, {"stage": "sft", "model": "m", "data": ["d"], "out": "o"})


def _guide_script() -> tuple[list[str], str]:
    """(the settings' variable names, the pipeline) of the guide's bash block."""
    block = re.search(r"```bash\n(.*?)```", GUIDE.read_text(), re.S).group(1)
    settings, pipeline = block.split("# --- pipeline ---\n")
    names = re.findall(r"^([A-Z_]+)=", settings, re.M)
    return names, pipeline


def _tiny_recipe(path: Path) -> Path:
    """The recipe with sizes shrunk to a few steps of a tiny model; every other value as published."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(progress=False, sequences={"seq_len": 128}, checkpoint={"save_every": 0})
    recipe["distributed"]["threads"] = 2
    for stage, section in recipe["stages"].items():
        section.update(batch_size=4, grad_accum=1, steps=2)
        section.pop("epochs", None)
        if stage == "midtrain":
            section["schedule"]["warmup_steps"] = 1
        if stage == "rl":
            section["rl"].update(prompts_per_step=2, num_generations=2, max_new_tokens=8)
    path.write_text(yaml.safe_dump(recipe))
    return path


def _chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _data(root: Path) -> Path:
    """Tulu 3 SFT rows (id, messages, source), open-instruct RLVR rows, text rows."""
    for d in ("math", "code", "tool_use", "safety", "general"):
        _write(root / d / "sft.jsonl", [{"id": f"{d}-{i}", "source": f"tulu-3-{d}", **_chat(f"{d} question {i}",
                                                                                            f"answer {i}")}
                                        for i in range(8)])
    for d in ("math", "code"):
        _write(root / d / "midtrain.jsonl", [{"text": f"{d} text number {i} " * 8} for i in range(16)])
    _write(root / "math" / "rl.jsonl", [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                         "ground_truth": str(2 * i), "dataset": "gsm8k"} for i in range(4)])
    _write(root / "code" / "rl.jsonl", [{"messages": [{"role": "user", "content": "Write add(a, b)."}],
                                         "ground_truth": ["assert add(1, 2) == 3"], "dataset": "code"}] * 4)
    return root


def _olmo2_pair(root: Path) -> tuple[Path, Path]:
    anchor = make_dense_checkpoint(root / "anchor", "olmo2", seed=0)
    base = make_dense_checkpoint(root / "base", "olmo2", seed=1)
    tok = AutoTokenizer.from_pretrained(str(anchor))
    tok.bos_token, tok.chat_template = "<|endoftext|>", OLMO2_TEMPLATE  # Olmo 2: bos = eos = <|endoftext|>
    tok.save_pretrained(str(anchor))
    return anchor, base


def test_the_guide_runs_as_written_at_tiny_size(tmp_path):
    names, pipeline = _guide_script()
    try:
        fetch("bfcl"), fetch("ifbench")
        suites = "humaneval bfcl ifbench"
    except BarkitError:  # registry unreachable: the official suites that ship in installed packages
        suites = "humaneval"
    pipeline = pipeline.replace("for suite in humaneval bfcl ifbench;", f"for suite in {suites};")
    anchor, base = _olmo2_pair(tmp_path / "models")
    settings = {"ANCHOR": anchor, "BASE": base, "DATA": _data(tmp_path / "data"),
                "RECIPE": _tiny_recipe(tmp_path / "recipe.yaml"), "OUT": tmp_path / "runs", "RUN": "barkit",
                "SHARD": "--distributed.strategy fsdp", "MIDTRAINED": "math code", "SFT_ONLY": "tool_use safety",
                "EVAL_FLAGS": "--limit 2 --max-new-tokens 8"}
    assert sorted(names) == sorted(settings)  # the guide's settings are exactly the ones set here
    script = "".join(f"{k}='{v}'\n" for k, v in settings.items()) + pipeline
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TQDM_DISABLE": "1"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bar = tmp_path / "runs" / "bar"
    config = json.loads((bar / "config.json").read_text())
    assert (config["model_type"], config["num_experts"]) == ("flex_olmo", 5)
    manifest = json.loads((bar / "barkit_manifest.json").read_text())
    assert manifest["experts"] == ["anchor", "math", "code", "tool_use", "safety"]
    AutoModelForCausalLM.from_pretrained(str(bar))  # stock transformers, no remote code
    for suite in suites.split():
        table = (tmp_path / "runs" / f"eval-{suite}" / "comparison.md").read_text()
        assert "| anchor |" in table and "| BAR-5x |" in table, suite
