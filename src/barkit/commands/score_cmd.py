"""`barkit score --suite S --completions FILE.jsonl`: score outputs of any system with barkit's verifiers."""

from dataclasses import dataclass, field
from pathlib import Path

from barkit.eval.harness import score_file
from barkit.eval.report import markdown_table


@dataclass
class ScoreConfig:
    completions: str = field(metadata={"help": "JSONL with `id` and `completion` per line"})
    suite: str = "toy"
    world: str | None = None
    out: str | None = field(default=None, metadata={"help": "output directory (default: next to the file)"})
    extract_code: bool = field(default=False, metadata={
        "help": "score the first fenced code block of each completion (not HumanEval's official harness)"})


def run(cfg: ScoreConfig) -> None:
    path = Path(cfg.completions)
    out = Path(cfg.out) if cfg.out else path.with_name(path.stem + "-scores")
    results = score_file(cfg.suite, path, cfg.world, out, cfg.extract_code)
    print(markdown_table({results["name"]: results}), end="")
