"""`barkit upgrade --model DIR --replace code=NEW_CKPT --data ... --out DIR2`: swap one expert, retrain the router."""

from barkit.route import UpgradeConfig, upgrade

POSITIONAL = ("model",)


def run(cfg: UpgradeConfig) -> None:
    print(f"wrote upgraded MoE to {upgrade(cfg)}")
