"""`barkit adapt --stage midtrain|sft|rl|router|pretrain --model CKPT --data FILE [FILE...] --out DIR
[--config stage.yaml] [--set key=value]`: train one stage, writing a new checkpoint directory.

Data parallel: `accelerate launch --multi_gpu --num_processes N -m barkit.cli adapt ...` (CPU hosts too;
see configs/accelerate/)."""

import os

from barkit.train import StageConfig, train

POSITIONAL = ()


def run(cfg: StageConfig) -> None:
    out = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {cfg.stage} checkpoint to {out}")
