"""`barkit route --model DIR --data F1 F2 ... --out DIR2`: train only the router of a composed MoE."""

from barkit.route import RouteConfig, train_router

POSITIONAL = ("model",)


def run(cfg: RouteConfig) -> None:
    print(f"wrote routed MoE to {train_router(cfg)}")
