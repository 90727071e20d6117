"""Every barkit command line the docs suggest, and every flag an error message tells users to pass, is one the
CLI accepts: the command lines are parsed by barkit's own parser (placeholders filled in), the flags looked up
in the parser of every command."""

import re
import subprocess
from pathlib import Path

import pytest

from barkit.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the placeholders the docs use for paths and values, and what stands in for them
FILL = {"CKPT": "ckpt", "MODEL": "model", "MOE": "moe", "DIR": "out", "F": "data.jsonl", "F1": "a.jsonl",
        "F2": "b.jsonl", "N": "8", "T": "hi", "S": "sft", "ROWS": "rows.jsonl", "FILE": "c.jsonl", "BASE": "base",
        "ANCHOR": "anchor", "a=NEW": "a=new"}


def _doc_commands() -> list[str]:
    found = set()
    for path in DOCS:
        text = path.read_text()
        found |= set(re.findall(r"`(barkit [a-z]+ [^`]*)`", text))  # inline commands with arguments
        for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):  # and command lines in code blocks
            joined = block.replace("\\\n", " ")
            found |= {m.strip() for m in re.findall(r"(?:^|\$ |\$RUN )(barkit [a-z]+ [^\n#|;]*)", joined, re.M)}
    return sorted(found)


def _argv(command: str) -> list[str]:
    command = re.sub(r"(--[\w.-]+) \.\.\.", r"\1 x", command.replace("\\|", "|")).replace("...", "")
    command = re.sub(r"\[[^\]]*\]", "", command)  # optional parts
    command = re.sub(r"(\w+)\|[\w|.]+", r"\1", command)  # alternatives: the first
    command = re.sub(r'"?\$\{?(\w+)\}?[^" ]*"?', "value", command)  # shell variables
    words = command.split()[1:]
    return [FILL.get(w, w) for w in words]


@pytest.mark.parametrize("command", _doc_commands())
def test_every_command_line_in_the_docs_parses(command):
    argv = _argv(command)
    if len(argv) <= 2 and argv[-1].startswith("--"):  # a mention of one flag (`barkit branch --router-init`)
        assert argv[-1] in _known_flags(), command
        return
    if argv[:2] == ["data", "tokenize"] and len(argv) == 2:
        return  # the command's name
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:  # --help exits 0
            pytest.fail(f"{command!r} -> {argv}: the CLI rejects it (exit {exc.code})")


def _known_flags() -> set[str]:
    flags = set()
    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        flags |= {opt for action in sub._actions for opt in action.option_strings}
    return flags


def test_every_flag_an_error_message_names_exists():
    text = subprocess.run(["git", "grep", "-h", "-o", r"pass --[a-z][a-z.-]*[a-z]", "--", "src/barkit"],
                          cwd=ROOT, capture_output=True, text=True).stdout
    named = {m.split()[1] for m in text.splitlines()}
    assert named, "no message names a flag"
    assert named <= _known_flags(), named - _known_flags()
