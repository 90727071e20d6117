"""One training engine for every barkit stage: `train(StageConfig(...)) -> output checkpoint dir`.

Stages: pretrain (causal LM, all parameters), midtrain / sft / rl (BAR's progressive unfreezing of a
2-expert checkpoint, anchor frozen), router (router-only training of a composed MoE).
"""

from barkit.train.engine import train
from barkit.train.stages import RLConfig, StageConfig

__all__ = ["RLConfig", "StageConfig", "train"]
