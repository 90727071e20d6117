"""Shared helpers for the surgery benchmarks: random >= 1B-parameter bf16 Olmo 2 checkpoints streamed to disk,
and timing / peak-memory measurement of a command run as a child process.

The checkpoint is written tensor by tensor through `checkpoint.ShardedWriter`, so the model is never held in
memory (at most one shard). Values come from a seeded N(0, 0.02) pool read at a random offset per tensor:
distinct per seed and key, and much faster than drawing 1B normals on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from barkit.checkpoint import ShardedWriter, build_manifest, write_json

# Olmo 2 1B-like shape with a GPT-NeoX-sized vocabulary: ~1.28B parameters, ~2.6 GB in bf16.
OLMO2_1B = dict(vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
                tie_word_embeddings=False, pad_token_id=1, eos_token_id=0, bos_token_id=None)
POOL_SIZE = (1 << 25) + 7


def olmo2_config(**overrides) -> dict:
    from transformers import Olmo2Config

    config = Olmo2Config(**{**OLMO2_1B, **overrides}).to_dict()
    config.update(architectures=["Olmo2ForCausalLM"], dtype="bfloat16")
    config.pop("transformers_version", None)
    return config


def tensor_shapes(config: dict) -> dict[str, list[int]]:
    """Key -> shape of the dense model, read off a model built on the meta device (no memory used)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _pooled(pool: torch.Tensor, numel: int, offset: int) -> torch.Tensor:
    out = torch.empty(numel, dtype=pool.dtype)
    done = 0
    while done < numel:
        take = min(numel - done, pool.numel() - offset)
        out[done:done + take] = pool[offset:offset + take]
        done, offset = done + take, 0
    return out


def write_random_checkpoint(out: str | Path, seed: int, max_shard_size: str = "1GB", **overrides) -> Path:
    """Stream a random bf16 dense Olmo 2 checkpoint (with a manifest recording its weight hashes)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = olmo2_config(**overrides)
    gen = torch.Generator().manual_seed(seed)
    pool = torch.empty(POOL_SIZE, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=gen)
    offsets = random.Random(seed)
    writer = ShardedWriter(out, max_shard_size)
    for key, shape in tensor_shapes(config).items():
        numel = 1
        for dim in shape:
            numel *= dim
        writer.add(key, _pooled(pool, numel, offsets.randrange(POOL_SIZE)).view(shape))
    writer.close()
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_json(out / "barkit_manifest.json",
               build_manifest("random", {}, {"seed": seed, **overrides}, seed, writer.file_hashes))
    return out


def hardlink_copy(src: Path, dst: Path) -> Path:
    """A second checkpoint directory sharing the first's files (free on disk, same page cache)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for path in src.iterdir():
        os.link(path, dst / path.name)
    return dst


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def largest_tensor_bytes(path: Path) -> int:
    from barkit.checkpoint import CheckpointReader

    reader = CheckpointReader(path)
    return max(reader.nbytes(k) for k in reader.keys())


def _status_kb(pid: int | str) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


# Runs a barkit command and reports its own VmHWM at exit. (ru_maxrss of a child is useless here: Linux
# carries the forking parent's RSS into it across exec.)
_WRAPPER = ("import sys; from barkit.cli import main; rc = main(sys.argv[1:]); "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('VMHWM_KB', hwm, file=sys.stderr); sys.exit(rc)")


def barkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", _WRAPPER, *args]


# Bytes of memory a throwaway process touches before every timed run (see `prefault`); 0 turns it off.
PREFAULT_BYTES = int(float(os.environ.get("BARKIT_BENCH_PREFAULT_GB", "12")) * 2**30)


def prefault(nbytes: int = PREFAULT_BYTES) -> None:
    """Touch `nbytes` of fresh memory in a throwaway process, then free it.

    On these VMs the first touch of a guest page the host has taken back costs ~1-4 s/GB (measured: 14 GB in
    58 s, refilling it 2 s), and freed pages are taken back within seconds. Every output byte lands in such
    pages (page cache), so without this a run's wall time depended on what ran before it, not on the tool.
    12 GB covers a 1.3B branch: 4.2 GB of output page cache plus up to 2 GB of shards in flight (with 6 GB
    branch took 13 s, with 12 GB 6.3 s; cp and dd need only their output's pages). Caveat: on a 24 GB
    machine it can also evict the inputs' page cache, so repeated runs still vary (branch 10.9-14.2 s, cp
    2.7-7.6 s across runs of one session): compare ratios within a run, over several repeats.
    """
    if nbytes > 0:
        subprocess.run([sys.executable, "-c", f"b = bytearray({nbytes}); b[::4096] = b'x' * len(b[::4096])"],
                       check=True)


def measure(cmd: list[str], poll_s: float = 0.02) -> dict:
    """Run `cmd`: wall and CPU (user + sys) time, peak RSS (VmHWM: anonymous + mapped file pages), polled peak
    anonymous RSS."""
    subprocess.run(["sync"], check=True)  # start with no dirty pages from earlier steps
    prefault()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # rusage of this child alone
        if pid:
            break
        for name, value in _status_kb(proc.pid).items():
            if name in peak:
                peak[name] = max(peak[name], value)
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {err[-2000:]}")
    reported = [int(line.split()[1]) for line in err.splitlines() if line.startswith("VMHWM_KB")]
    hwm = max([peak["VmHWM"], *reported])
    return {"load": load, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mb": hwm / 1024,
            "peak_anon_mb": peak["RssAnon"] / 1024,
            "peak_file_mb": peak["RssFile"] / 1024}


def import_baseline_mb() -> float:
    """Peak RSS of a process that only imports what the surgery commands import."""
    code = ("import barkit.cli, barkit.branch, barkit.compose, barkit.merge, barkit.select, transformers, sys; "
            "print('VMHWM_KB', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], "
            "file=sys.stderr)")
    return measure([sys.executable, "-c", code])["maxrss_mb"]


def cp_cmd(src: Path, dst: Path) -> list[str]:
    return ["cp", "-r", str(src), str(dst)]


def remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def dd_cmd(src: Path, dst: Path) -> list[str]:
    """Copy a directory through userspace read/write (as barkit must), unlike cp's in-kernel copy_file_range."""
    script = (f'mkdir -p "{dst}" && for f in "{src}"/*; do '
              f'dd if="$f" of="{dst}/$(basename "$f")" bs=16M status=none; done')
    return ["sh", "-c", script]


def timed_pairs(tool: list[str], out: Path, repeats: int = 2) -> list[dict[str, dict]]:
    """Time `tool` (which writes `out`) against `cp -r` and a userspace `dd` copy of the same bytes.

    A first, untimed run warms the page cache and its output becomes the copies' source. Timed runs
    rotate which of the three goes first.
    """
    ref, copy = out.with_name(out.name + "-ref"), out.with_name(out.name + "-copy")
    remove(out, ref, copy)
    measure(tool)
    os.replace(out, ref)
    steps = {"tool": lambda: {**measure(tool), "bytes": dir_bytes(out)},
             "cp": lambda: measure(cp_cmd(ref, copy)), "dd": lambda: measure(dd_cmd(ref, copy))}
    runs = []
    for i in range(repeats):
        names = list(steps)[i % 3:] + list(steps)[:i % 3]
        run = {}
        for name in names:
            run[name] = steps[name]()
            remove(copy)
        run["order"] = names
        runs.append(run)
        remove(out)
    remove(ref)
    return runs


def report_pairs(name: str, runs: list[dict]) -> None:
    for i, run in enumerate(runs):
        order = " -> ".join(name if n == "tool" else n for n in run["order"])
        print(f"  run {i + 1} ({order}; 1-min load average {run['tool']['load']:.1f} on {os.cpu_count()} cores)")
        print(f"    {name:<14}{fmt(run['tool'])}")
        print(f"    {'cp -r':<14}{fmt(run['cp'])}")
        print(f"    {'dd (userspace)':<14}{fmt(run['dd'])}")
    for ref in ("cp", "dd"):
        wall = ", ".join(f"{r['tool']['wall_s'] / r[ref]['wall_s']:.2f}x" for r in runs)
        cpu = ", ".join(f"{r['tool']['cpu_s'] / max(r[ref]['cpu_s'], 1e-3):.2f}x" for r in runs)
        print(f"  {name} / {ref} of the same bytes: wall {wall}; cpu {cpu}")


def rss_line(result: dict, largest_mb: float, baseline_mb: float) -> str:
    return (f"peak anonymous RSS {result['peak_anon_mb']:.0f} MB = "
            f"{(result['peak_anon_mb'] - baseline_mb) / largest_mb:.1f} largest tensors above the "
            f"{baseline_mb:.0f} MB import baseline; VmHWM {result['maxrss_mb']:.0f} MB "
            f"(incl. {result['peak_file_mb']:.0f} MB of mmapped input pages)")


def fmt(result: dict) -> str:
    return (f"{result['wall_s']:6.1f} s wall {result['cpu_s']:6.1f} s cpu  maxrss {result['maxrss_mb']:7.0f} MB  "
            f"peak anon {result['peak_anon_mb']:7.0f} MB  peak file-backed {result['peak_file_mb']:6.0f} MB")
