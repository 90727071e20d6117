"""`barkit plan MODEL --stage S [--devices N ...] [--device-memory GB] [--seq-len T]`: memory per device of a
training stage, before anything is launched."""

import argparse

from barkit.config import add_bool_flag
from barkit.train.memory import plan_table
from barkit.train.stages import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint directory (config.json is enough)")
    parser.add_argument("--stage", nargs="+", default=["midtrain", "sft", "rl"], choices=STAGES,
                        help="stages to plan (default: midtrain sft rl)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8], help="device counts (FSDP over them)")
    parser.add_argument("--device-memory", type=float, default=80.0, help="GB per device")
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence")
    add_bool_flag(parser, "--fp32", "no mixed precision: every weight in fp32")


def main(args: argparse.Namespace) -> None:
    print(plan_table(args.model, args.stage, args.devices, args.device_memory, args.seq_len,
                     mixed_precision=not args.fp32), end="")
