"""Stage configs: BAR's defaults per stage, explicit values win, value checks name the key."""

import pytest

from barkit.config import load_config
from barkit.errors import BarkitError
from barkit.train import MixtureConfig, OptimConfig, StageConfig

REQUIRED = {"model": "m", "data": ["d.jsonl"], "out": "o"}


@pytest.mark.parametrize("stage,lr,schedule,epochs,trainable", [
    ("pretrain", 1e-3, "cosine", 1.0, ["all"]),
    ("midtrain", 9e-4, "cosine", 1.0, ["expert:1", "router:1"]),
    ("sft", 1e-4, "linear", 2.0, ["expert:1", "router:1", "embeddings", "lm_head"]),
    ("rl", 6e-7, "constant", 1.0, ["expert:1", "router:1", "embeddings", "lm_head", "attention", "norms"]),
    ("router", 1e-4, "linear", 2.0, ["router"]),
])
def test_stage_defaults(stage, lr, schedule, epochs, trainable):
    cfg = StageConfig(stage=stage, **REQUIRED).resolve()
    assert (cfg.optim.lr, cfg.schedule.kind, cfg.epochs, cfg.trainable) == (lr, schedule, epochs, trainable)
    assert cfg.optim.weight_decay == 0.0 and cfg.optim.betas == [0.9, 0.95] and cfg.optim.max_grad_norm == 1.0
    assert cfg.objective == ("grpo" if stage == "rl" else "lm")


def test_explicit_values_win_and_general_ratio_defaults_with_general_data():
    cfg = StageConfig(stage="sft", optim=OptimConfig(lr=2e-3), trainable=["all"],
                      mixture=MixtureConfig(general_data=["g.jsonl"]), **REQUIRED).resolve()
    assert (cfg.optim.lr, cfg.trainable, cfg.mixture.general_ratio) == (2e-3, ["all"], 0.5)
    assert StageConfig(stage="rl", **REQUIRED).resolve().rl.epsilon_high == 0.272


def test_load_config_from_yaml_with_sections(tmp_path):
    path = tmp_path / "rl.yaml"
    path.write_text("stage: rl\nmodel: m\ndata: [p.jsonl]\nout: o\noptim:\n  lr: 1e-4\nrl:\n  num_generations: 4\n"
                    "  beta: 0.01\n")
    cfg = load_config(StageConfig, path, overrides=["rl.epsilon_high=null"])
    assert cfg.optim.lr == 1e-4 and cfg.rl.num_generations == 4 and cfg.rl.beta == 0.01 and cfg.rl.epsilon_high is None


@pytest.mark.parametrize("values,needle", [
    ({"stage": "sft", "batch_size": 10, "grad_accum": 3}, "'batch_size': 10 is not divisible by grad_accum=3"),
    ({"stage": "midtrain", "mixture": {"general_data": ["g"]}}, "only the sft stage mixes general data"),
    ({"stage": "sft", "schedule": {"warmup_ratio": 1.5}}, "'schedule.warmup_ratio'"),
    ({"stage": "sft", "optim": {"lr": 1}, "schedule": {"typo": 1}}, "unknown config key 'schedule.typo'"),
    ({"stage": "sft", "trainable": []}, "'trainable': empty list"),
    ({"stage": "dpo"}, "'stage': 'dpo' is not one of"),
])
def test_bad_values(values, needle):
    with pytest.raises(BarkitError, match=needle.replace("(", r"\(")):
        load_config(StageConfig, values={**REQUIRED, **values})


def test_shared_lr_scale_groups_shared_tensors_apart_from_experts_and_router(moe_ckpts):
    """Expert FFNs and the router keep the stage lr; every other trainable tensor gets lr * shared_lr_scale."""
    import torch
    from transformers import AutoModelForCausalLM

    from barkit.arch import spec_for_moe
    from barkit.train.optim import build_optimizer, set_lr

    model = AutoModelForCausalLM.from_pretrained(str(moe_ckpts["olmo2"]), dtype=torch.float32)
    spec = spec_for_moe(model.config.model_type)
    cfg = StageConfig(stage="rl", model="m", data=["d"], out="o",
                      optim=OptimConfig(lr=1e-3, shared_lr_scale=0.1)).resolve()
    optimizer = build_optimizer(model, cfg, spec)
    set_lr(optimizer, 2e-3)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(lr_of) == len(names)  # every trainable tensor is in exactly one group
    for name, param in names.items():
        expert_side = "mlp.experts" in name or "mlp.gate" in name
        assert lr_of[id(param)] == pytest.approx(2e-3 if expert_side else 2e-4), name
    dense = build_optimizer(model, cfg, None)  # dense models (no expert side): the full lr everywhere
    assert {g["lr_scale"] for g in dense.param_groups} == {1.0}
