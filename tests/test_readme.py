"""The README's Python API example runs as written (on tiny checkpoints and data in its working directory)."""

import json
import re
from pathlib import Path

from transformers import AutoModelForCausalLM

from barkit.tiny import make_dense_checkpoint

README = Path(__file__).parents[1] / "README.md"


def _chats(path: Path, pairs) -> None:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in pairs))


def test_python_api_example_runs(tmp_path, monkeypatch):
    example = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    make_dense_checkpoint(tmp_path / "anchor", seed=0)
    make_dense_checkpoint(tmp_path / "base", seed=1)
    _chats(tmp_path / "math_sft.jsonl", [(f"{i} + 1", str(i + 1)) for i in range(12)])
    _chats(tmp_path / "general_sft.jsonl", [(f"name {w}", f"the {w}") for w in ("fox", "dog", "cat", "owl")])
    exec(compile(example, "README.md", "exec"), {})
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "runs" / "bar-moe"))
    assert model.config.model_type == "flex_olmo" and model.config.barkit_expert_names == ["anchor", "math"]
