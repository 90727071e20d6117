"""Shared fixtures: tiny random dense checkpoints built once per session."""

import pytest

from barkit.tiny import make_dense_checkpoint


@pytest.fixture(scope="session")
def dense_ckpts(tmp_path_factory):
    """{family: (anchor_dir, base_dir)} for Olmo 2, Llama, Qwen 2 (2.5) and Qwen 3, tiny and random."""
    root = tmp_path_factory.mktemp("dense")
    return {family: (make_dense_checkpoint(root / f"{family}-anchor", family, seed=0),
                     make_dense_checkpoint(root / f"{family}-base", family, seed=1))
            for family in ("olmo2", "llama", "qwen2", "qwen3")}


@pytest.fixture(autouse=True, scope="session")
def _private_hash_cache(tmp_path_factory):
    """Tests never read or write the user's ~/.cache/barkit hash cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BARKIT_HASH_CACHE", str(tmp_path_factory.mktemp("hash-cache") / "sha256.json"))
    yield
    mp.undo()
