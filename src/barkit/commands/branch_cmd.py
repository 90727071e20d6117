"""`barkit branch ANCHOR --out DIR [--base BASE] [--router-init random|hidden|embed --prompts FILE]`."""

from barkit.branch import BranchConfig, branch

POSITIONAL = ("anchor",)


def run(cfg: BranchConfig) -> None:
    out = branch(cfg)
    print(f"wrote 2-expert MoE to {out}")
