from dataclasses import dataclass, field
from typing import Literal

import pytest

from barkit.branch import BranchConfig
from barkit.cli import main
from barkit.config import load_config
from barkit.errors import BarkitError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class Stage:
    data: str
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    optim: Optim = field(default_factory=Optim)

    def validate(self):
        if self.steps < 1:
            raise BarkitError(f"config key 'steps': must be >= 1, got {self.steps}")


def test_precedence_yaml_then_values_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: x.jsonl\nsteps: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(Stage, path, {"steps": "7"}, ["optim.lr=2e-4", "mode=b", "optim.betas=[0.8, 0.9]"])
    assert (cfg.data, cfg.steps, cfg.mode, cfg.optim.lr, cfg.optim.betas) == ("x.jsonl", 7, "b", 2e-4, [0.8, 0.9])


@pytest.mark.parametrize("overrides,message", [
    (["nope=1"], "unknown config key 'nope'"),
    (["optim.nope=1"], "unknown config key 'optim.nope'"),
    (["steps=abc"], "config key 'steps': expected int"),
    (["steps=1.5"], "config key 'steps': expected an integer"),
    (["mode=c"], "config key 'mode': 'c' is not one of ['a', 'b']"),
    (["steps=0"], "config key 'steps': must be >= 1"),
])
def test_invalid_configs_name_the_key(overrides, message):
    with pytest.raises(BarkitError) as exc:
        load_config(Stage, None, {"data": "x"}, overrides)
    assert message in str(exc.value)


def test_missing_yaml_and_bad_yaml(tmp_path):
    with pytest.raises(BarkitError, match="config file not found"):
        load_config(Stage, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(BarkitError, match="bad.yaml: expected a mapping"):
        load_config(Stage, bad)


def test_dry_run_prints_resolved_config(tmp_path, capsys):
    yaml_path = tmp_path / "b.yaml"
    yaml_path.write_text("seed: 4\nrouter_init: embed\nprompts: p.txt\n")
    code = main(["branch", "A", "--out", "O", "--config", str(yaml_path), "--seed", "5", "--set", "top_k=1",
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "anchor: A\n" in out and "seed: 5\n" in out and "top_k: 1\n" in out and "router_init: embed\n" in out
    assert not (tmp_path / "O").exists()


def test_branch_config_validation():
    with pytest.raises(BarkitError, match="'prompts': required for router_init=hidden"):
        load_config(BranchConfig, None, {"anchor": "a", "out": "b", "router_init": "hidden"})


def test_every_command_prints_help(capsys):
    """`barkit CMD --help` works for every command (a bare % in a field's help once broke route/upgrade)."""
    from barkit.cli import COMMANDS, main

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: barkit" in capsys.readouterr().out, name


def test_adapt_help_shows_every_config_field_with_its_help(capsys):
    """Every field of the stage config, nested sections included, is a flag with help text in --help."""
    import dataclasses
    import typing

    from barkit.cli import main
    from barkit.train import StageConfig

    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            inner = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(inner):
                yield from fields(inner, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name, f.metadata.get("help", "")

    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    missing = [name for name, help_text in fields(StageConfig)
               if not help_text or "--" + name.replace("_", "-") not in text]
    assert missing == []


def test_booleans_take_the_same_form_in_every_command(capsys):
    """`--flag` alone or `--flag true|false`, whether the command is a config run or not."""
    from barkit.cli import build_parser

    tokenize = ["data", "tokenize", "--model", "m", "--data", "d", "--kind", "text", "--seq-len", "8", "--out", "o"]
    for argv, dest in ((["adapt", "--overwrite"], "overwrite"), ([*tokenize, "--overwrite"], "overwrite"),
                       (["inspect", "x", "--json"], "json"), (["plan", "m", "--stage", "sft", "--fp32"], "fp32")):
        for extra, expected in (([], True), (["true"], True), (["false"], False)):
            args = build_parser(argv + extra).parse_args(argv + extra)
            assert str(getattr(args, dest)).lower() == str(expected).lower(), (argv, extra)
    with pytest.raises(SystemExit):
        build_parser(tokenize).parse_args([*tokenize, "--overwrite", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
