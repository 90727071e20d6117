"""barkit's FSDP2 on 2 CPU processes (gloo, torchrun): every BAR stage trains sharded, keeps the anchor's bytes,
writes a stock checkpoint, matches one process, and resumes after SIGKILL bit-identically."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from barkit.arch import ARCHITECTURES, ROLES
from barkit.checkpoint import CheckpointReader
from barkit.cli import main
from barkit.train.metrics import TIMING_KEYS, read_metrics

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")

# small steps (lr 1e-3): Adam turns last-bit differences of a reduction order into steps of size ~lr, so the
# tolerance below scales with it; 1 process and 2 processes reduce gradients in different orders
COMMON = {"steps": 4, "batch_size": 8, "progress": False, "sequences": {"seq_len": 32}, "optim": {"lr": 1e-3},
          "distributed": {"threads": 1}}
TOLERANCE = 1e-5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path: Path, **values) -> Path:
    merged = {**COMMON, **values}
    merged["distributed"] = {**COMMON["distributed"], **values.get("distributed", {})}
    path.write_text(yaml.safe_dump(merged))
    return path


def _torchrun(config: Path, script: Path | None = None, *extra: str) -> subprocess.CompletedProcess:
    target = [str(script), str(config), *extra] if script else ["-m", "barkit.cli", "adapt", "--config", str(config)]
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_port()), *target]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _tensors(path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(path)
    return {k: reader.get(k) for k in reader.keys()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def rl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl") / "rl.jsonl"
    # a constraint random completions meet sometimes: rewards vary within groups, so GRPO has a gradient
    short = [{"type": "length_constraints:number_words", "kwargs": {"num_words": 3, "relation": "less than"}}]
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"{i} + 1"}],
                                        "verifier": "instruction", "constraints": short}) + "\n"
                            for i in range(16)))
    return str(path)


@pytest.mark.parametrize("stage", ["midtrain", "sft", "router"])
def test_two_sharded_processes_match_one_and_keep_the_anchor(tmp_path, moe_ckpts, data_files, stage):
    parent = moe_ckpts["olmo2"]
    data = data_files["text" if stage == "midtrain" else "chat"]
    base = {"stage": stage, "model": str(parent), "data": [data]}
    if stage == "router":
        base["mixture"] = {"sample_fraction": 1.0}
    sharded = _torchrun(_config(tmp_path / "fsdp.yaml", out=str(tmp_path / "fsdp"), **base,
                                distributed={"strategy": "fsdp"}))
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert main(["adapt", "--config", str(_config(tmp_path / "one.yaml", out=str(tmp_path / "one"), **base))]) == 0

    two, one, before = _tensors(tmp_path / "fsdp"), _tensors(tmp_path / "one"), _tensors(parent)
    assert _max_diff(two, one) <= TOLERANCE
    rows_two, rows_one = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("fsdp", "one"))
    assert all(abs(a["loss"] - b["loss"]) <= 1e-5 * b["loss"] for a, b in zip(rows_two, rows_one))
    spec = ARCHITECTURES["olmo2"]
    for layer in range(2):
        for role in ROLES:
            key = spec.expert_key(role, layer, 0)
            assert torch.equal(two[key], before[key])  # the anchor, bit for bit
        if stage != "router":
            assert torch.equal(two[spec.router_key(layer)][0], before[spec.router_key(layer)][0])
    manifest = json.loads((tmp_path / "fsdp" / "barkit_manifest.json").read_text())
    assert manifest["data_parallel"]["strategy"] == "fsdp" and manifest["data_parallel"]["world_size"] == 2
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "fsdp"))
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_rl_sharded_matches_replicated(tmp_path, moe_ckpts, rl_file):
    """GRPO samples per rank, so 2 sharded processes are compared with 2 replicated (DDP) ones: same prompts,
    same seeds, same samples."""
    base = {"stage": "rl", "model": str(moe_ckpts["olmo2"]), "data": [rl_file], "steps": 2,
            "sequences": {"seq_len": 40}, "rl": {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 6}}
    runs = {}
    for strategy in ("fsdp", "ddp"):
        result = _torchrun(_config(tmp_path / f"{strategy}.yaml", out=str(tmp_path / strategy), **base,
                                   distributed={"strategy": strategy}))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[strategy] = _tensors(tmp_path / strategy)
    assert _max_diff(runs["fsdp"], runs["ddp"]) <= TOLERANCE
    spec = ARCHITECTURES["olmo2"]
    before = _tensors(moe_ckpts["olmo2"])
    for layer in range(2):
        assert all(torch.equal(runs["fsdp"][spec.expert_key(r, layer, 0)], before[spec.expert_key(r, layer, 0)])
                   for r in ROLES)
        assert torch.equal(runs["fsdp"][spec.router_key(layer)][0], before[spec.router_key(layer)][0])
    assert not torch.equal(runs["fsdp"]["model.norm.weight"], before["model.norm.weight"])  # rl trains norms
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "fsdp"))


KILLER = textwrap.dedent("""
    import os, signal, sys
    from barkit.config import load_config
    from barkit.train import StageConfig, train

    def on_step(step, row):
        if step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(StageConfig, sys.argv[1]), on_step=on_step)
""")


def test_sigkill_and_resume_of_two_sharded_processes_is_bit_identical(tmp_path, moe_ckpts, data_files):
    """Every rank writes its own shard of the trainable weights and AdamW state (safetensors) and its RNG; a run
    killed after step 5 resumes from step 4 and ends with the same bytes as an uninterrupted run."""
    base = {"stage": "sft", "model": str(moe_ckpts["olmo2"]), "data": [data_files["chat"]], "steps": 6,
            "distributed": {"strategy": "fsdp"}, "checkpoint": {"save_every": 2}}
    reference = _torchrun(_config(tmp_path / "ref.yaml", out=str(tmp_path / "ref"), **base))
    assert reference.returncode == 0, reference.stderr[-3000:]
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = _torchrun(_config(tmp_path / "run.yaml", out=str(tmp_path / "run"), **base), script, "5")
    assert killed.returncode != 0 and not (tmp_path / "run").exists()
    assert sorted(p.name for p in (tmp_path / "run.ckpt").glob("step-*")) == ["step-000002", "step-000004"]
    assert len(list((tmp_path / "run.ckpt" / "step-000004").glob("trainable-*.safetensors"))) == 2
    resumed = _torchrun(_config(tmp_path / "run.yaml", out=str(tmp_path / "run"),
                                **{**base, "checkpoint": {"save_every": 2, "resume": True}}))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = _tensors(tmp_path / "ref"), _tensors(tmp_path / "run")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    runs = [read_metrics(tmp_path / name / "metrics.jsonl") for name in ("run", "ref")]
    assert strip(runs[0]) == strip(runs[1])


def test_a_launch_configured_for_accelerates_fsdp_is_refused(tmp_path, moe_ckpts, data_files, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    code = main(["adapt", "--stage", "sft", "--model", str(moe_ckpts["olmo2"]), "--data", data_files["chat"],
                 "--out", str(tmp_path / "o"), "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "distributed.strategy: fsdp" in err
    assert not (tmp_path / "o").exists()


LEAVER = textwrap.dedent("""
    import atexit
    import torch.distributed as dist
    from barkit.train import DistributedConfig, StageConfig
    from barkit.train.engine import make_runtime

    # atexit runs handlers last-in first-out: this one runs after everything make_runtime registers
    atexit.register(lambda: print("group alive at exit:", dist.is_initialized(), flush=True))
    cfg = StageConfig(stage="sft", model="unused", data=["unused"], out="unused",
                      distributed=DistributedConfig(strategy="fsdp")).resolve()
    make_runtime(cfg)
    make_runtime(cfg)  # a second stage in the same process reuses the group
    print("group alive after setup:", dist.is_initialized(), flush=True)
""")


def test_the_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    """A gloo group still alive at interpreter shutdown can abort the process after its outputs are written
    (pytorch/pytorch#190489): the runtime leaves the group from an exit handler."""
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER)
    env = {**os.environ, "MASTER_PORT": str(_port()), "WORLD_SIZE": "1", "RANK": "0"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["group alive after setup: True", "group alive at exit: False"]


def test_single_process_fsdp_jobs_need_no_port(tmp_path):
    """Two single-process FSDP jobs on one host, side by side, while the port the runtime once bound is taken:
    neither collides (one process uses an in-memory store, no TCP port)."""
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER)
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK")}
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 29511))
            taken.listen()
        except OSError:
            pass  # already taken by someone else: the point stands
        jobs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env) for _ in range(2)]
        outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-1000:] for _, err in outputs]
    assert all(out.splitlines()[0] == "group alive after setup: True" for out, _ in outputs)
