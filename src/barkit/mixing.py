"""Tensor mixing: the arithmetic that compose and merge share (means, task-vector sums, TIES, DARE).

Every function reads its inputs one tensor (or one piece) at a time and accumulates in twice the input
precision, so k identical inputs give back exactly that input, and memory does not grow with the number of
models mixed. Every merge method is a setting of one task-arithmetic core, `merge_tensors`.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from barkit.checkpoint import CheckpointReader


@contextlib.contextmanager
def torch_threads(count: int):
    """Run torch ops on `count` threads. Compose's means are memory-bound 1M-element adds: a second OpenMP
    thread gains nothing and its spin-waits take the core the writer's kernel copies need (5 domains of a
    1.28B model: 14.3 -> 6.8 s of user CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """Twice the input precision, so k identical values sum exactly and their mean is bit-identical."""
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def mean_of(read: list[Callable[[], torch.Tensor]]) -> torch.Tensor:
    """Mean of tensors read one at a time (running sum in higher precision, cast back to the first's dtype).

    >>> x = torch.tensor([0.1, 0.7, -3.3])
    >>> torch.equal(mean_of([lambda: x.clone()] * 3), x)  # naive fp32 (x + x + x) / 3 is not always x
    True
    """
    first = read[0]()
    dtype = first.dtype
    total = first.to(accum_dtype(dtype))
    del first
    for reader in read[1:]:
        total.add_(reader())
    return total.div_(len(read)).to(dtype)


# Elements per piece when a mean or a comparison streams a tensor: a few MB stay in cache. Whole-tensor
# mixed-dtype adds are memory-bound here (six 200 MB bf16 embeddings: 1.5 s on 2 cores; in pieces 0.1 s).
CHUNK_ELEMENTS = 1 << 20


def mean_of_inputs(readers: list[CheckpointReader], key: str, chunk: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """`mean_of` tensor `key` over `readers`, streamed piece by piece through one reused buffer: the same
    arithmetic per element (so bit-identical to it), but no input is ever held whole and the pieces stay in
    cache. The result has the first reader's dtype.

    >>> from barkit.tiny import make_dense_checkpoint
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> r = [CheckpointReader(make_dense_checkpoint(f"{d}/{i}", seed=i)) for i in range(3)]
    >>> k = "model.embed_tokens.weight"
    >>> torch.equal(mean_of_inputs(r, k, chunk=1000), mean_of([lambda x=x: x.get(k) for x in r]))
    True
    """
    locs = [reader.locate(key) for reader in readers]
    dtype, numel = locs[0].dtype, locs[0].numel()
    out = torch.empty(numel, dtype=dtype)
    acc = torch.empty(min(chunk, numel), dtype=accum_dtype(dtype))
    buf = torch.empty(min(chunk, numel) * max(loc.element_size() for loc in locs), dtype=torch.uint8)
    for start in range(0, numel, chunk):
        n = min(chunk, numel - start)
        part = acc[:n]
        for i, reader in enumerate(readers):
            piece = _piece(reader, key, start, n, buf)
            part.copy_(piece) if i == 0 else part.add_(piece)
        out[start:start + n].copy_(part.div_(len(readers)))
    return out.reshape(locs[0].shape)


def linear_merge_of(base, ref, models: list, key: str, weights: list[float],
                    chunk: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """base + sum_i weight_i (model_i - ref) for tensor `key`, streamed piece by piece through reused buffers
    (sources: anything with `locate` and `read_into`, like `CheckpointReader`). The arithmetic per entry is
    `merge_tensors`'s with elementwise settings, so the result is bit-identical to it; only the output is
    ever held whole.

    >>> from barkit.tiny import make_dense_checkpoint
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> b, r, x = (CheckpointReader(make_dense_checkpoint(f"{d}/{i}", seed=i)) for i in range(3))
    >>> k = "model.embed_tokens.weight"
    >>> whole = merge_tensors(b.get(k), [x.get(k).double() - r.get(k)], [0.3])
    >>> torch.equal(linear_merge_of(b, r, [x], k, [0.3], chunk=1000), whole)
    True
    """
    loc = base.locate(key)
    dtype, numel = loc.dtype, loc.numel()
    acc_dtype = accum_dtype(dtype)
    out = torch.empty(numel, dtype=dtype)
    size = min(chunk, numel)
    merged, delta = torch.empty(size, dtype=acc_dtype), torch.empty(size, dtype=acc_dtype)
    raw = torch.empty(size * max(s.locate(key).element_size() for s in (base, ref, *models)), dtype=torch.uint8)
    ref_raw = torch.empty_like(raw)
    for start in range(0, numel, chunk):
        n = min(chunk, numel - start)
        total, d = merged[:n].zero_(), delta[:n]
        ref_part = _piece(ref, key, start, n, ref_raw)
        for source, weight in zip(models, weights, strict=True):
            d.copy_(_piece(source, key, start, n, raw)).sub_(ref_part)
            total.add_(d, alpha=weight)
        out[start:start + n].copy_(total.add_(_piece(base, key, start, n, raw)))
    return out.reshape(loc.shape)


def delta_sum_of(base: Callable[[], torch.Tensor], read: list[Callable[[], torch.Tensor]]) -> torch.Tensor:
    """base + sum_i (x_i - base), read one tensor at a time: task arithmetic with lambda = 1 per input.

    >>> b, x, y = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0]), torch.tensor([1.0, 1.0])
    >>> delta_sum_of(lambda: b, [lambda: x, lambda: y]).tolist()
    [1.5, 1.0]
    """
    first = base()
    dtype = first.dtype
    total = first.to(accum_dtype(dtype)).mul_(1 - len(read))
    del first
    for reader in read:
        total.add_(reader())
    return total.to(dtype)


def ties_of(base: Callable[[], torch.Tensor], read: list[Callable[[], torch.Tensor]]) -> torch.Tensor:
    """base + per entry the mean of the changes (x_i - base) whose sign agrees with the sign of their sum.

    Unlike `mean_of`, a change made by one domain only is kept whole instead of divided by N + 1; unlike
    `delta_sum_of`, changes several domains made alike are not added up N times.

    >>> b = torch.tensor([0.0, 0.0, 1.0])
    >>> ties_of(lambda: b, [lambda: torch.tensor([2.0, 1.0, 1.0]), lambda: torch.tensor([0.0, 3.0, 0.0])]).tolist()
    [2.0, 2.0, 0.0]
    """
    base_T = base()
    deltas = [reader().to(accum_dtype(base_T.dtype)) - base_T for reader in read]
    return merge_tensors(base_T, deltas, [1.0] * len(deltas), MergeSettings(elect_sign=True))


@dataclass(frozen=True)
class MergeSettings:
    density: float | None = None  # TIES trim: keep this fraction of each task vector (by magnitude)
    drop_p: float = 0.0  # DARE: drop probability
    elect_sign: bool = False  # TIES: elect a sign per entry and average only agreeing task vectors
    seed: int = 0
    # Conventions where the TIES / DARE papers and mergekit differ (MergeConfig documents the choice):
    trim_rounding: str = "round"  # kept entries: round(density * n), ties at the threshold kept | "floor":
    #                               exactly int(density * n) (mergekit)
    dare_rescale: str = "inverse"  # kept entries x 1 / (1 - p) | "l1": x L1(before) / L1(after) (mergekit)
    ties_divisor: str = "count"  # disjoint mean over agreeing models | "weight_sum": by the sum of their
    #                              weights | "none": their sum (mergekit's normalize: true / false)
    densities: tuple[float, ...] = ()  # per model (mergekit's per-model density); empty: `density` for all
    compute_dtype: str = "wide"  # "wide": fp32 for 16-bit inputs (fp64 for fp32), rounded once at the end |
    #                              "input": every op in the inputs' dtype, in mergekit's order

    def density_of(self, index: int) -> float | None:
        return self.densities[index] if self.densities else self.density

    def work_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype if self.compute_dtype == "input" else accum_dtype(dtype)

    @property
    def is_elementwise(self) -> bool:
        """Each output entry depends only on the same entry of the inputs (no trim, mask or election)."""
        return self.density is None and not self.densities and self.drop_p == 0 and not self.elect_sign


def trim_keep(delta_T: torch.Tensor, density: float, rounding: str = "round") -> torch.Tensor | None:
    """Which entries TIES's trim keeps (a bool tensor; None: all): the `density` fraction of largest magnitude,
    round(density * n) of them with ties at the threshold kept, or (`floor`, mergekit's convention) exactly
    max(1, int(density * n)): mergekit 0.1.5 keeps at least one entry of every tensor."""
    n = delta_T.numel()
    k = max(1, int(density * n)) if rounding == "floor" else round(density * n)
    if k >= n:
        return None
    if k == 0:
        return torch.zeros(delta_T.shape, dtype=torch.bool)
    magnitude = delta_T.abs()
    if rounding == "floor":  # mergekit's ranking call, so ties at the threshold fall as in mergekit
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.argsort(magnitude.flatten().float(), descending=True)[:k]] = True
        return keep.view(delta_T.shape)
    threshold = magnitude.flatten().kthvalue(n - k + 1).values
    return magnitude >= threshold


def trim(delta_T: torch.Tensor, density: float, rounding: str = "round") -> torch.Tensor:
    """Zero all but the entries `trim_keep` keeps.

    >>> trim(torch.tensor([0.5, -0.1, 0.3, -2.0]), 0.5).tolist()
    [0.5, 0.0, 0.0, -2.0]
    >>> trim(torch.tensor([0.5, -0.1, 0.25, -2.0]), 0.7).tolist(), trim(torch.tensor([0.5, -0.1, 0.25, -2.0]), 0.7,
    ...                                                                   "floor").tolist()
    ([0.5, 0.0, 0.25, -2.0], [0.5, 0.0, 0.0, -2.0])
    """
    keep = trim_keep(delta_T, density, rounding)
    return delta_T if keep is None else torch.where(keep, delta_T, torch.zeros((), dtype=delta_T.dtype))


def dare_seed(seed: int, key: str, index: int) -> int:
    """A reproducible per-(tensor, model) seed, independent of the order tensors are processed in."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def dare_mask(shape: torch.Size, p: float, seed: int) -> torch.Tensor:
    """The entries DARE keeps (each with probability 1 - p), from the per-(tensor, model) seed."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) >= p


def dare(delta_T: torch.Tensor, p: float, seed: int, rescale: str = "inverse") -> torch.Tensor:
    """Drop entries with probability p; rescale the rest by 1/(1-p), which keeps each entry's expected value
    (the DARE paper), or (`l1`, mergekit's default) so that the task vector keeps its L1 norm."""
    if p == 0:
        return delta_T
    return _apply(delta_T, *_dare_plan(delta_T, None, p, seed, rescale))


@dataclass
class Sparsity:
    """What sparsifying one task vector does, decided on the whole tensor and then applied entry by entry (so
    a tensor can be merged in pieces): keep these entries, then divide or multiply them by a scale."""

    keep: torch.Tensor | None = None  # bool, flattened; None: every entry
    divide_by: float | None = None  # DARE's 1 - p
    multiply_by: torch.Tensor | None = None  # DARE's L1 ratio (a 0-d tensor)

    def apply(self, delta: torch.Tensor, start: int = 0) -> torch.Tensor:
        keep = None if self.keep is None else self.keep[start:start + delta.numel()].view(delta.shape)
        return _apply(delta, keep, self.divide_by, self.multiply_by)


def _apply(delta: torch.Tensor, keep: torch.Tensor | None, divide_by: float | None,
           multiply_by: torch.Tensor | None) -> torch.Tensor:
    if keep is not None:
        delta = torch.where(keep, delta, torch.zeros((), dtype=delta.dtype))
    if divide_by is not None:
        delta = delta / divide_by
    if multiply_by is not None:
        delta = delta * multiply_by
    return delta


def _dare_plan(delta_T: torch.Tensor, keep: torch.Tensor | None, p: float, seed: int,
               rescale: str) -> tuple[torch.Tensor, float | None, torch.Tensor | None]:
    """(keep, divide_by, multiply_by) after DARE's drop of an already trimmed (`keep`) task vector."""
    dropped = dare_mask(delta_T.shape, p, seed)
    kept = dropped if keep is None else dropped.logical_and_(keep)
    if rescale != "l1":
        return kept, 1 - p, None
    trimmed = delta_T if keep is None else torch.where(keep, delta_T, torch.zeros((), dtype=delta_T.dtype))
    before = trimmed.abs().sum()
    after = torch.where(kept, trimmed, torch.zeros((), dtype=delta_T.dtype)).abs().sum()
    return kept, None, (before / after if before >= 1e-7 and after >= 1e-7 else None)


def sparsity_of(delta_T: torch.Tensor, settings: MergeSettings, key: str, index: int) -> Sparsity:
    """TIES's trim, then DARE's drop and rescale, planned on the whole task vector."""
    density = settings.density_of(index)
    keep = trim_keep(delta_T, density, settings.trim_rounding) if density is not None else None
    if settings.drop_p == 0:
        return Sparsity(None if keep is None else keep.flatten())
    kept, divide_by, multiply_by = _dare_plan(delta_T, keep, settings.drop_p,
                                              dare_seed(settings.seed, key, index), settings.dare_rescale)
    return Sparsity(kept.flatten(), divide_by, multiply_by)


def _sparsify(delta_T: torch.Tensor, settings: MergeSettings, key: str, index: int) -> torch.Tensor:
    return sparsity_of(delta_T, settings, key, index).apply(delta_T.flatten()).view(delta_T.shape)


def _disjoint_mean(weighted: list[torch.Tensor], weights: list[float], divisor: str) -> torch.Tensor:
    """TIES: per entry, the sum of the task vectors whose sign matches the sign of their sum, divided by how many
    agree (`count`, the TIES paper's disjoint mean), by the sum of their weights (`weight_sum`) or not at all
    (`none`); the last two elect + where the sum is 0, as mergekit does (its normalize: true / false)."""
    total_sum = sum(weighted)
    sign = torch.sign(total_sum) if divisor == "count" else torch.where(total_sum >= 0, 1.0, -1.0)
    total, count = torch.zeros_like(total_sum), torch.zeros_like(total_sum)
    for delta_T, weight in zip(weighted, weights):
        agree = (torch.sign(delta_T) == sign) & (delta_T != 0)
        total += torch.where(agree, delta_T, 0)
        count += agree * (1.0 if divisor == "count" else weight)
    if divisor == "count":
        return total / count.clamp_min(1)
    if divisor == "weight_sum":
        return total / torch.where(count == 0, 1.0, count)
    return total


def _combine_in_input_dtype(base_T: torch.Tensor, sparse: Iterable[torch.Tensor], weights: list[float],
                            settings: MergeSettings) -> torch.Tensor:
    """`_combine` with every op in the inputs' dtype, in mergekit's order (generalized task arithmetic: weights
    rounded to the dtype, weighted task vectors stacked and summed, TIES's mask from the sign of their sum)."""
    deltas = torch.stack(list(sparse))
    w = torch.tensor(weights, dtype=deltas.dtype).view(-1, *([1] * (deltas.dim() - 1)))
    weighted = deltas * w
    if settings.elect_sign:
        if settings.ties_divisor == "count":
            sign = torch.sign(weighted.sum(dim=0))
            mask = (weighted.sign() == sign) & (weighted != 0)
        else:
            majority = (weighted.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
            mask = weighted.sign() == majority
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0) if settings.ties_divisor == "weight_sum" else mask.sum(dim=0).to(deltas.dtype)
        divisor[divisor == 0] = 1
        if settings.ties_divisor != "none":
            mixed = mixed / divisor
    else:
        mixed = weighted.sum(dim=0)
    return (base_T + mixed).to(base_T.dtype)


def _combine(base_T: torch.Tensor, sparse: Iterable[torch.Tensor], weights: list[float],
             settings: MergeSettings) -> torch.Tensor:
    """base + combine_i(weight_i * sparse_i), in the sparse tensors' (higher) precision, cast to base's dtype."""
    if settings.compute_dtype == "input":
        return _combine_in_input_dtype(base_T, sparse, weights, settings)
    if settings.elect_sign:
        merged = _disjoint_mean([delta_T * w for delta_T, w in zip(sparse, weights, strict=True)], weights,
                                settings.ties_divisor)
    else:
        merged = torch.zeros(base_T.shape, dtype=accum_dtype(base_T.dtype))
        for delta_T, w in zip(sparse, weights, strict=True):
            merged.add_(delta_T, alpha=w)
    return merged.add_(base_T).to(base_T.dtype)


def merge_tensors(base_T: torch.Tensor, deltas: Iterable[torch.Tensor], weights: list[float],
                  settings: MergeSettings = MergeSettings(), key: str = "") -> torch.Tensor:
    """theta = base + combine_i(weight_i * sparsify(delta_i)), computed in higher precision, cast to base's dtype.

    `deltas` may be a generator: without sign election only one task vector is alive at a time.

    >>> merge_tensors(torch.tensor([1.0, 2.0]), [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])],
    ...               [0.5, 2.0]).tolist()
    [1.5, 6.0]
    """
    dtype = settings.work_dtype(base_T.dtype)
    sparse = (_sparsify(d.to(dtype), settings, key, i) for i, d in enumerate(deltas))
    return _combine(base_T, sparse, weights, settings)


def merge_of(base, ref, models: list, key: str, weights: list[float], settings: MergeSettings,
             chunk: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """`merge_tensors` of tensor `key` (base + combine_i weight_i sparsify(model_i - ref)), streamed: what
    needs the whole task vector (TIES's top-k, DARE's mask and L1 ratio) is planned one model at a time and
    kept as a bool mask and a scale; the arithmetic then runs piece by piece, entry for entry the same as
    `merge_tensors` (so bit-identical to it). Only the output, the masks and one task vector while planning
    are ever held whole. Sources: anything with `get`, `locate` and `read_into`, like `CheckpointReader`.

    >>> from barkit.tiny import make_dense_checkpoint
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> b, r, x, y = (CheckpointReader(make_dense_checkpoint(f"{d}/{i}", seed=i)) for i in range(4))
    >>> k, s = "model.embed_tokens.weight", MergeSettings(density=0.3, drop_p=0.2, elect_sign=True)
    >>> whole = merge_tensors(b.get(k), [m.get(k).double() - r.get(k) for m in (x, y)], [0.7, 0.3], s, k)
    >>> torch.equal(merge_of(b, r, [x, y], k, [0.7, 0.3], s, chunk=1000), whole)
    True
    """
    if settings.is_elementwise and settings.compute_dtype == "wide":
        return linear_merge_of(base, ref, models, key, weights, chunk)
    loc = base.locate(key)
    acc_dtype, numel = settings.work_dtype(loc.dtype), loc.numel()
    plans: list[Sparsity] = [Sparsity()] * len(models)
    if settings.drop_p > 0 or any(settings.density_of(i) is not None for i in range(len(models))):
        ref_T = ref.get(key)
        plans = [sparsity_of(m.get(key).to(acc_dtype).sub_(ref_T), settings, key, i) for i, m in enumerate(models)]
        del ref_T
    out = torch.empty(numel, dtype=loc.dtype)
    for start in range(0, numel, chunk):
        n = min(chunk, numel - start)
        ref_part = _piece(ref, key, start, n)
        sparse = (plan.apply(_piece(m, key, start, n).to(acc_dtype).sub_(ref_part), start)
                  for m, plan in zip(models, plans))
        out[start:start + n] = _combine(_piece(base, key, start, n), sparse, weights, settings)
    return out.reshape(loc.shape)


def _piece(source, key: str, start: int, n: int, buf: torch.Tensor | None = None) -> torch.Tensor:
    """Entries [start, start + n) of tensor `key`, read straight from the file (into `buf`, a reused uint8
    buffer, when given)."""
    item = source.locate(key)
    size = n * item.element_size()
    raw = torch.empty(size, dtype=torch.uint8) if buf is None else buf[:size]
    source.read_into(key, start * item.element_size(), memoryview(raw.numpy()))
    return raw.view(item.dtype)
