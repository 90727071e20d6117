"""`barkit data tokenize --model CKPT --data F [F ...] --kind text|chat --seq-len N --out DIR`: tokenise once
into memory-mapped token shards that mid-training and SFT stream (pass DIR as their --data)."""

import argparse
from pathlib import Path

from barkit.config import add_bool_flag, yaml_value
from barkit.train.model_io import load_tokenizer
from barkit.train.shards import KINDS, TokenShards, tokenize_to_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    tok = sub.add_parser("tokenize", help="tokenise data files into token shards")
    tok.add_argument("--model", required=True, help="checkpoint whose tokenizer (and chat template) to use")
    tok.add_argument("--data", nargs="+", required=True,
                     help="data files or directories: text or chat rows (docs/formats.md)")
    tok.add_argument("--kind", choices=KINDS, required=True, help="text: packed documents; chat: masked chats")
    tok.add_argument("--seq-len", type=int, required=True, help="tokens per sequence (the stage's seq_len)")
    tok.add_argument("--out", required=True, help="output directory")
    tok.add_argument("--columns", type=yaml_value, default=None, metavar="YAML",
                     help="rename source columns to barkit's, e.g. '{conversation: messages}'")
    add_bool_flag(tok, "--overwrite", "replace an existing output directory")


def main(args: argparse.Namespace) -> None:
    out = tokenize_to_shards(args.data, load_tokenizer(Path(args.model)), args.kind, args.seq_len, args.out,
                             overwrite=args.overwrite, columns=args.columns)
    shards = TokenShards(out)
    print(f"wrote {len(shards)} {shards.kind} sequences ({shards.meta['tokens']:,} tokens) to {out}")
