"""One training engine for every barkit stage: `train(StageConfig(...)) -> output checkpoint dir`.

Stages: pretrain (causal LM, all parameters), midtrain / sft / rl (BAR's progressive unfreezing of a
2-expert checkpoint, anchor frozen), router (router-only training of a composed MoE). What a stage
optimises is an objective chosen by name (`barkit.train.objectives`).
"""

from barkit.train.engine import train
from barkit.train.stages import (
    CheckpointConfig,
    DistributedConfig,
    MixtureConfig,
    OptimConfig,
    RLConfig,
    ScheduleConfig,
    SequenceConfig,
    StageConfig,
)

__all__ = ["CheckpointConfig", "DistributedConfig", "MixtureConfig", "OptimConfig", "RLConfig", "ScheduleConfig",
           "SequenceConfig", "StageConfig", "train"]
