"""`barkit inspect CKPT [--json]`."""

import argparse
import json

from barkit.config import add_bool_flag
from barkit.inspect_ckpt import describe, format_description


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory")
    add_bool_flag(parser, "--json", "print JSON instead of text")


def main(args: argparse.Namespace) -> None:
    info = describe(args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
