"""The `barkit` command. Each subcommand lives in its own module, imported only when used.

A command module offers either a config dataclass plus `run(cfg)` (flags derived from the dataclass), or
`add_arguments(parser)` plus `main(args)` for commands that are not stage runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from safetensors import SafetensorError

from barkit.errors import BarkitError

# name -> (module, config class or None, help)
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "branch": ("barkit.commands.branch_cmd", "BranchConfig", "upcycle a dense model into a 2-expert MoE"),
    "inspect": ("barkit.commands.inspect_cmd", None, "describe a checkpoint"),
    "plan": ("barkit.commands.plan_cmd", None, "memory per device of a training stage, before launching it"),
    "compose": ("barkit.commands.compose_cmd", "ComposeConfig", "compose anchor + domain experts into one MoE"),
    "select": ("barkit.commands.select_cmd", "SelectConfig", "keep only some experts (opt-in/opt-out)"),
    "fold": ("barkit.commands.merge_cmd", "FoldConfig", "write the dense version of one expert of an MoE"),
    "route": ("barkit.commands.route_cmd", "RouteConfig", "train only the router of a composed MoE"),
    "upgrade": ("barkit.commands.upgrade_cmd", "UpgradeConfig", "replace one expert and retrain the router"),
    "merge": ("barkit.commands.merge_cmd", "MergeConfig", "dense weight-space merging baselines"),
    "demo": ("barkit.commands.demo_cmd", "DemoConfig", "run BAR end to end on the toy world and print the table"),
    "data": ("barkit.commands.data_cmd", None, "tokenise data once into token shards that training streams"),
    "world": ("barkit.commands.world_cmd", None, "build the embedded toy world (data, tokenizer, base, anchor)"),
    "baseline": ("barkit.commands.baseline_cmd", "BaselineConfig", "train one baseline (merge, cft, retrain, btx)"),
    "eval": ("barkit.commands.eval_cmd", "EvalConfig", "evaluate a model per category (or --compare results)"),
    "score": ("barkit.commands.score_cmd", "ScoreConfig", "score completions produced elsewhere"),
    "reward": ("barkit.commands.reward_cmd", "RewardConfig", "audit an RL prompt set's rewards on given completions"),
    "generate": ("barkit.commands.generate_cmd", "GenerateConfig", "generate a reply with expert attribution"),
    "chat": ("barkit.commands.chat_cmd", "GenerateConfig", "interactive chat with expert attribution"),
    "adapt": ("barkit.commands.adapt_cmd", "StageConfig", "train one stage (pretrain|midtrain|sft|rl|router)"),
}


def _load(name: str):
    module_name, config_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return module, (getattr(module, config_name) if config_name else None)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="barkit", description="Branch-Adapt-Route modular post-training")
    from barkit import __version__

    parser.add_argument("--version", action="version", version=f"barkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != wanted:
            continue  # only import the module of the command being run
        module, cfg_cls = _load(name)
        if cfg_cls is not None:
            from barkit.config import add_config_args

            add_config_args(p, cfg_cls, positional=getattr(module, "POSITIONAL", ()))
        else:
            module.add_arguments(p)
    return parser


def describe_error(exc: BaseException) -> str:
    """One line for a user error: barkit's own message, or the file and the system's reason (a full disk, a
    read-only or missing path, a file that is not UTF-8), caught here once for every command."""
    if isinstance(exc, BarkitError):
        return str(exc)
    if isinstance(exc, SafetensorError):  # safetensors' writer reports I/O errors (a full disk) as its own type
        return f"cannot write a safetensors file: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not valid UTF-8 text (byte {exc.start}: {exc.reason})"
    where = exc.filename if getattr(exc, "filename", None) else "a file"
    return f"{where}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("demo", "world"):  # one table per CPU vendor with AVX2
        from barkit.kernels import pin

        pin()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        module, cfg_cls = _load(args.command)
        if cfg_cls is None:
            return int(module.main(args) or 0)
        from barkit.config import config_from_args, dump_yaml

        cfg = config_from_args(cfg_cls, args)
        if args.dry_run:
            print(dump_yaml(cfg), end="")
            return 0
        return int(module.run(cfg) or 0)
    except (BarkitError, OSError, UnicodeDecodeError, SafetensorError) as exc:
        print(f"barkit {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        if os.environ.get("BARKIT_DEBUG"):
            raise
        return 1
    except KeyboardInterrupt:
        print(f"barkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
