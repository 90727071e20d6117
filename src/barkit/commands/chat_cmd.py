"""`barkit chat MODEL [--keep math,code]`: an interactive prompt that reports expert attribution per reply."""

from barkit.commands.generate_cmd import POSITIONAL, GenerateConfig, run_chat  # noqa: F401

run = run_chat
