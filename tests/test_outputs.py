"""Output directories: one writer at a time, killed runs reclaimed, --overwrite never loses OUT."""

import multiprocessing
import os
import signal
import time

import pytest

from barkit.errors import BarkitError
from barkit.outputs import atomic_output_dir, output_lock


def _hold(target, ready, release):
    with output_lock(target):
        ready.set()
        release.wait(30)


def test_a_second_writer_fails_while_the_first_holds_the_output(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "out", ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(BarkitError, match="another barkit job is writing this output"):
            with atomic_output_dir(tmp_path / "out"):
                pass
    finally:
        release.set()
        holder.join(30)
    with atomic_output_dir(tmp_path / "out") as tmp:  # free again once the holder is done
        (tmp / "x").write_text("1")
    assert (tmp_path / "out" / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file left behind


def _die_inside(target, stage):
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
        if stage == "writing":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace = os.replace

        def replace_then_die(src, dst):  # die between the two renames of --overwrite
            real_replace(src, dst)
            if str(dst).endswith(f".old-{os.getpid()}"):
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace_then_die


@pytest.mark.parametrize("stage", ["writing", "between renames"])
def test_a_killed_writer_leaves_nothing_the_next_run_cannot_reclaim(tmp_path, stage):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    child = multiprocessing.get_context("fork").Process(target=_die_inside, args=(out, stage))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # the kill left something behind
    with output_lock(out):  # the next job on OUT reclaims it
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old").read_text() == "old"  # OUT as it was before the killed job


@pytest.mark.parametrize("stage", ["writing", "between renames"])
def test_any_later_job_reclaims_a_killed_writer_and_a_live_one_is_left_alone(tmp_path, stage, monkeypatch):
    """A killed job's temp dir (a whole checkpoint) does not wait for the next job on its own OUT: a job on any
    other output reclaims it; a job still holding its lock keeps its temp dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    killed, live = tmp_path / "a" / "out", tmp_path / "b" / "out"
    killed.mkdir(parents=True)
    (killed / "old").write_text("old")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_die_inside, args=(killed, stage))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert any(p.name.startswith(".out.") for p in killed.parent.iterdir())
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_temp, args=(live, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with output_lock(tmp_path / "c" / "out"):  # a job on an unrelated output
            pass
        assert sorted(p.name for p in killed.parent.iterdir()) == ["out"]
        assert (killed / "old").read_text() == "old"
        assert any(p.name.startswith(".out.tmp-") for p in live.parent.iterdir())  # the live job's is kept
    finally:
        release.set()
        holder.join(30)
    assert list((tmp_path / "cache" / "barkit" / "outputs").iterdir()) == []


def _hold_temp(target, ready, release):
    with atomic_output_dir(target) as tmp:
        (tmp / "x").write_text("1")
        ready.set()
        release.wait(30)


def test_locks_are_reentrant_within_a_job(tmp_path):
    with output_lock(tmp_path / "out"):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("1")
        time.sleep(0)
    assert (tmp_path / "out" / "x").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(BarkitError, match="exists and is not a directory"):
        with atomic_output_dir(tmp_path / "out", overwrite=True):
            pass


def _branch_and_die(anchor, out):
    """Branch, SIGKILLed after its first shard is on disk (mid-write)."""
    from barkit import checkpoint
    from barkit.branch import BranchConfig, branch

    real = checkpoint._write_all
    calls = []

    def write_then_die(fd, data):
        real(fd, data)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint._write_all = write_then_die
    branch(BranchConfig(anchor=str(anchor), out=str(out), max_shard_size="20KB"))


def test_branch_killed_mid_write_then_rerun_leaves_a_complete_output_and_no_temp_dir(tmp_path):
    from barkit.branch import BranchConfig, branch
    from barkit.checkpoint import CheckpointReader
    from barkit.tiny import make_dense_checkpoint

    anchor = make_dense_checkpoint(tmp_path / "anchor", seed=0)
    child = multiprocessing.get_context("fork").Process(target=_branch_and_die, args=(anchor, tmp_path / "out"))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert [p.name for p in tmp_path.glob(".out.tmp-*")] and not (tmp_path / "out").exists()
    branch(BranchConfig(anchor=str(anchor), out=str(tmp_path / "out"), max_shard_size="20KB"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor", "out"]
    reader = CheckpointReader(tmp_path / "out").check_files()
    assert len(reader.weight_files) > 1 and len(reader.keys()) > 0
