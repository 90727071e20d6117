"""FSDP's layer-by-layer loading rebuilds exactly the tensors transformers' loader builds, for every family."""

import torch

from barkit.arch import moe_spec_of, num_experts
from barkit.branch import BranchConfig, branch
from barkit.checkpoint import CheckpointReader
from barkit.train.sharded_load import memory_tensor, meta_model, plan_layout
from barkit.verify import load_strict


def _layout(path):
    reader = CheckpointReader(path)
    spec = moe_spec_of(reader.config)
    return reader, spec, num_experts(spec, reader.config) if spec else 0


def test_every_in_memory_tensor_is_rebuilt_from_the_checkpoint(dense_ckpts, tmp_path):
    """Every family's dense checkpoint and its `barkit branch` MoE (Qwen2-MoE's zero shared expert included)."""
    moes = [branch(BranchConfig(anchor=str(a), base=str(b), out=str(tmp_path / family), seed=1))
            for family, (a, b) in dense_ckpts.items()]
    paths = [*moes, *(pair[0] for pair in dense_ckpts.values())]
    for path in paths:
        reader, spec, experts = _layout(path)
        model = load_strict(path, dtype=None)
        assert plan_layout(reader, spec, experts, meta_model(reader, torch.float32)), path
        for name, param in model.named_parameters():
            assert torch.equal(memory_tensor(reader, spec, experts, name), param), (path, name)


def test_a_layout_the_tables_do_not_cover_falls_back(moe_ckpts, tmp_path):
    """A checkpoint whose expert tensors are stored under other names: no layer-by-layer load (the engine then
    loads the whole model and says so)."""
    reader, spec, experts = _layout(moe_ckpts["olmo2"])
    model = meta_model(reader, torch.float32)
    assert plan_layout(reader, spec, experts, model)
    assert not plan_layout(reader, spec, experts + 1, model)  # shapes that do not match
    model.model.layers[0].self_attn.q_proj.weight = torch.nn.Parameter(torch.empty(3, 3, device="meta"))
    assert not plan_layout(reader, spec, experts, model)
