"""Host memory per rank while a 2-process FSDP run loads its model: layer by layer (`sharded_load`, what
barkit does now) against every rank reading the whole model first (what it did before), side by side.

Writes a random ~0.3B Olmo 2 (hidden 1024, 12 layers, vocab 50304, bf16), branches it into a 2x FlexOlmo
(~0.46B) and launches `torchrun --nproc_per_node 2` twice, once per loader, as the SFT stage sets the model up
(trainable set, anchor rows split off, fp32 on CPU). Each rank reports its resident memory before loading
(interpreter, torch, transformers) and its high-water mark after sharding; the difference is what loading
cost it. Beside it: the rank's shard (its slice of every tensor) and the largest layer plus the embeddings,
the bound layer-by-layer loading aims for.

    python benchmarks/bench_sharded_load.py          # ~2 min on 2 cores
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
MB = 1e6
SHAPE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=16,
             num_key_value_heads=16)


def _status(field: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))


def worker(mode: str, path: str) -> None:
    import torch

    from barkit.config import load_config
    from barkit.train import StageConfig, trainable
    from barkit.train.engine import make_runtime
    from barkit.train.fsdp import shard_model
    from barkit.train.model_io import inspect_model, load_model
    from barkit.train.sharded_load import load_layers

    cfg = load_config(StageConfig, values={"stage": "sft", "model": path, "data": ["d"], "out": "o",
                                           "distributed": {"strategy": "fsdp", "threads": 1}}).resolve()
    acc = make_runtime(cfg)
    info = inspect_model(cfg, False)
    before = _status("VmRSS:")
    if mode == "layers":
        model, _, _, _ = load_layers(info.reader, info.spec, info.num_experts, cfg, torch.device("cpu"),
                                     torch.float32, shard=True)
    else:
        model = load_model(info, "cpu", torch.float32)
        plan = trainable.build_plan(model, cfg.trainable, info.spec, info.num_experts, cfg.stage, False)
        trainable.apply(plan, model)
        trainable.split_rows(plan, model, master_dtype=torch.float32)
        shard_model(model, info.spec, None, False)
    import gc

    gc.collect()
    local = sum(p.to_local().numel() * p.to_local().element_size() for p in model.parameters())
    layer = max(sum(p.numel() for p in lay.parameters()) for lay in model.model.layers) * 4 * acc.num_processes
    embed = sum(m.weight.numel() * 4 for m in (model.model.embed_tokens, model.lm_head))
    print("RESULT " + json.dumps({"rank": acc.process_index, "before": before, "hwm": _status("VmHWM:"),
                                  "shard": local, "layer": layer, "embeddings": embed}), flush=True)


def launch(mode: str, path: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), __file__, "--worker", mode, str(path)], capture_output=True, text=True, env=env)
    rows = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if len(rows) != 2:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-3000:])
    return sorted(rows, key=lambda r: r["rank"])


def main() -> None:
    from _random_ckpt import write_random_checkpoint

    from barkit.branch import BranchConfig, branch
    from barkit.tiny import tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        dense = write_random_checkpoint(Path(tmp) / "dense", seed=0, **SHAPE)
        tiny_tokenizer().save_pretrained(dense)
        moe = branch(BranchConfig(anchor=str(dense), base=str(dense), out=str(Path(tmp) / "moe"), seed=1))
        size = sum(p.stat().st_size for p in Path(moe).glob("*.safetensors"))
        print(f"2x FlexOlmo, {size / MB:.0f} MB in bf16 on disk, {2 * size / MB:.0f} MB in fp32; 2 ranks\n")
        print("| loader | rank | RSS before | loading cost (HWM - before) | its shard | + largest layer + embeddings "
              "| cost / (shard + layer + embeddings) |")
        print("|---|---|---|---|---|---|---|")
        for mode, label in (("whole", "whole model per rank (before)"), ("layers", "layer by layer (now)")):
            for r in launch(mode, Path(moe)):
                bound = r["shard"] + r["layer"] + r["embeddings"]
                cost = r["hwm"] - r["before"]
                print(f"| {label} | {r['rank']} | {r['before'] / MB:.0f} MB | {cost / MB:.0f} MB | "
                      f"{r['shard'] / MB:.0f} MB | {bound / MB:.0f} MB | {cost / bound:.2f} |")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(sys.argv[sys.argv.index("--worker") + 1], sys.argv[-1])
    else:
        main()
