"""`barkit plan`: predicted bytes equal what the trainer allocates on a tiny model; the CLI prints the table."""

import pytest
import torch
from accelerate.state import AcceleratorState

from barkit.arch import ARCHITECTURES
from barkit.cli import main
from barkit.train import trainable
from barkit.train.memory import largest_micro_batch, stage_memory
from barkit.train.optim import build_optimizer
from barkit.train.stages import STAGE_TRAINABLE, OptimConfig, StageConfig
from barkit.verify import load_strict


def _allocated(model_dir, stage) -> dict:
    """Weights, gradients and AdamW state after one real step of the stage's setup (fp32, CPU)."""
    model = load_strict(model_dir)
    spec = ARCHITECTURES["olmo2"]
    plan = trainable.build_plan(model, STAGE_TRAINABLE[stage], spec, 2, stage, False)
    trainable.apply(plan, model)
    trainable.split_rows(plan, model, master_dtype=torch.float32)
    cfg = StageConfig(stage=stage, model="m", data=["d"], out="o", optim=OptimConfig(lr=1e-3)).resolve()
    optimizer = build_optimizer(model, cfg, spec)
    model(torch.tensor([[1, 2, 3, 4]])).logits.pow(2).mean().backward()
    optimizer.step()
    size = lambda ts: sum(t.numel() * t.element_size() for t in ts if t is not None)  # noqa: E731
    return {"weights": size(model.parameters()), "grads": size(p.grad for p in model.parameters()),
            "adam": size(t for s in optimizer.state.values() for t in s.values() if t.dim() > 0)}


def test_plan_predicts_the_trainers_allocation_exactly(moe_ckpts):
    for stage in ("midtrain", "sft", "rl"):
        predicted = stage_memory(moe_ckpts["olmo2"], stage, mixed_precision=False)
        measured = _allocated(moe_ckpts["olmo2"], stage)
        assert (predicted.weight_bytes, predicted.grad_bytes, predicted.optimizer_bytes) == (
            measured["weights"], measured["grads"], measured["adam"]), stage
        assert predicted.state_bytes == predicted.minimum_bytes  # fp32 throughout: nothing above the minimum


def test_the_kv_cache_term_equals_what_generation_caches(moe_ckpts):
    """RL's generation holds a KV cache: the plan's bytes per token times the tokens equal the cache HF builds."""
    mem = stage_memory(moe_ckpts["olmo2"], "rl", mixed_precision=False)
    model = load_strict(moe_ckpts["olmo2"])
    cache = model(torch.tensor([[1, 2, 3, 4, 5, 6, 7]] * 3), use_cache=True).past_key_values
    cached = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert mem.kv_cache_bytes(3, 7) == cached > 0


def test_fsdp_divides_the_state_and_the_micro_batch_grows_with_devices(moe_ckpts):
    mem = stage_memory(moe_ckpts["olmo2"], "sft", mixed_precision=False)
    room = mem.state_bytes / 1e9 + 0.01  # the state and 10 MB on one device
    one, eight = (largest_micro_batch(mem, n, room, 64, checkpointing=False) for n in (1, 8))
    assert 0 < one < eight
    assert largest_micro_batch(mem, 1, mem.state_bytes / 2e9, 64, checkpointing=False) == 0


def test_plan_command_prints_a_table(moe_ckpts, capsys):
    assert main(["plan", str(moe_ckpts["olmo2"]), "--stage", "midtrain", "rl", "--devices", "1", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| stage | trainable | devices") and len(lines) == 2 + 4 + 4
    assert lines[-3].startswith("micro-batch sizes keep 10% of each 80 GB device free")
    assert lines[-1].startswith("rl also generates: its KV cache takes")
    assert main(["plan", str(moe_ckpts["olmo2"] / "missing")]) == 1


def _saved_bytes(model, ids) -> int:
    """Bytes autograd keeps for backward during one forward pass (what activation checkpointing trades away)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return total


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_activation_checkpointing_takes_effect_under_every_strategy(moe_ckpts, data_files, run_stage, tmp_path,
                                                                    monkeypatch, strategy):
    """distributed.activation_checkpointing under one process / DDP and under FSDP: the prepared model recomputes
    its layers, keeps fewer activations, and trains to the same weights."""
    from barkit.train import engine

    prepared = []
    real = engine._prepare
    monkeypatch.setattr(engine, "_prepare", lambda *a: prepared.append(real(*a)) or prepared[-1])
    runs = {}
    for flag in (False, True):
        out = run_stage(tmp_path / str(flag), "sft", moe_ckpts["olmo2"], data_files["chat"], steps=2,
                        distributed={"activation_checkpointing": flag, "strategy": strategy})
        runs[flag] = load_strict(out).state_dict()
    (plain, _), (checkpointed, _) = prepared
    assert not hasattr(plain.model.layers[0], "barkit_checkpointed")
    assert checkpointed.model.layers[0].barkit_checkpointed
    ids = torch.randint(0, 200, (4, 32))
    assert _saved_bytes(checkpointed, ids) < 0.7 * _saved_bytes(plain, ids)
    assert all(torch.allclose(runs[False][k], runs[True][k], atol=1e-6) for k in runs[False])


def test_mixed_precision_without_fsdp_computes_in_bf16(moe_ckpts, data_files, run_stage, tmp_path, monkeypatch):
    """One process under bf16 mixed precision: the residual stream and the split expert tensors are bf16, as
    FSDP's param_dtype presents them (fp32 trainable embeddings once carried an fp32 stream through every layer:
    1.7x the planned peak on an H200), while master weights stay fp32 and the output is saved whole."""
    from barkit.train import engine

    seen = []
    real = engine._prepare

    def prepare(*args):
        model, optimizer = real(*args)
        raw = args[-1]
        masters = raw.model.layers[0].mlp.experts.parametrizations.gate_up_proj
        seen.append(("master rows", masters.original1.dtype))
        seen.append(("embeddings", raw.model.embed_tokens.weight.dtype))
        raw.model.layers[1].register_forward_pre_hook(
            lambda _m, a, kw: seen.append(("layer input", (a or [kw.get("hidden_states")])[0].dtype)), with_kwargs=True)
        raw.model.layers[0].mlp.experts.register_forward_hook(
            lambda m, _i, _o: seen.append(("experts", m.gate_up_proj.dtype)))
        return model, optimizer

    monkeypatch.setattr(engine, "_prepare", prepare)
    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate keeps one precision per process
    try:
        out = run_stage(tmp_path / "o", "sft", moe_ckpts["olmo2"], data_files["chat"], steps=1,
                        distributed={"mixed_precision": "bf16"})
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert dict(seen) == {"master rows": torch.float32, "embeddings": torch.float32,
                          "layer input": torch.bfloat16, "experts": torch.bfloat16}
    assert {k: v.dtype for k, v in load_strict(out, dtype=None).state_dict().items()} == {
        k: v.dtype for k, v in load_strict(moe_ckpts["olmo2"], dtype=None).state_dict().items()}


def test_checkpointed_layers_recompute_inside_their_hooks(moe_ckpts):
    """The recomputation reruns a layer's forward, not its hooks: FSDP2's input cast and all-gather run once per
    pass (transformers < 5.23 checkpointed __call__, and FSDP2 + bf16 then recomputed on fp32 inputs)."""
    from barkit.train.fsdp import checkpoint_layers

    model = load_strict(moe_ckpts["olmo2"]).train()
    checkpoint_layers(model)
    calls, saved = [], []
    layer = model.model.layers[0]
    layer.register_forward_pre_hook(lambda *_: calls.append("hook"))
    real = layer.forward.__kwdefaults__["_forward"]
    layer.forward.__kwdefaults__["_forward"] = lambda *a, **k: calls.append("forward") or real(*a, **k)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    assert calls == ["hook", "forward", "forward"]  # once forward, once recomputed, the hook only once
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    assert calls[3:] == ["hook", "forward"]


def test_fsdp_keeps_the_root_whole_and_the_plan_counts_it(moe_ckpts):
    """The root FSDP unit (embeddings, final norm, lm_head) stays whole through a step, with whole fp32 gradients
    where it trains: SFT trains embeddings and lm_head, mid-training neither."""
    model = load_strict(moe_ckpts["olmo2"])
    root = {n: p.numel() for n, p in model.named_parameters() if not n.startswith("model.layers.")}
    trained = root["model.embed_tokens.weight"] + root["lm_head.weight"]
    assert stage_memory(moe_ckpts["olmo2"], "midtrain", mixed_precision=False).unsharded_root_bytes == \
        4 * sum(root.values())
    sft = stage_memory(moe_ckpts["olmo2"], "sft", mixed_precision=False)
    assert sft.unsharded_root_bytes == 4 * sum(root.values()) + 4 * trained
    assert sft.peak_bytes(2, 3, 16, True) == sft.state_bytes // 2 + sft.unsharded_root_bytes + \
        sft.activation_bytes(3, 16, True)
