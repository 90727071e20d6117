"""`barkit demo [--profile quick|default] [--out DIR]`: BAR end to end on the toy world."""

from barkit.toy.demo import DemoConfig, run_demo


def run(cfg: DemoConfig) -> None:
    run_demo(cfg)
