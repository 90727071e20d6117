"""`barkit world build --out DIR [--profile quick|default] [--seed N]`: the embedded toy world."""

import argparse

from barkit.config import add_config_args, config_from_args, dump_yaml
from barkit.toy.world.build import WorldConfig, build_world


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["build"], help="build (or reuse) the toy world")
    add_config_args(parser, WorldConfig)


def main(args: argparse.Namespace) -> None:
    cfg = config_from_args(WorldConfig, args)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return
    root = build_world(cfg)
    print(f"toy world ready in {root}")
