"""Causal language modelling: packed text (pretrain, midtrain) or chats with assistant-only labels (sft, the
router stage), with an optional router-supervision term."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from barkit.errors import BarkitError
from barkit.train import data
from barkit.train.data import IGNORE, collate, collate_packed
from barkit.train.objectives.base import Objective, Update, check_divisible, shard
from barkit.train.shards import TokenShards, is_shards
from barkit.train.stages import CHAT_STAGES, TEXT_STAGES, StageConfig


def token_loss_sum(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not IGNORE."""
    return F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1).float(), labels_BT[:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")


def route_loss_sum(router_logits: tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every layer's router (fp32 softmax over experts) against each token's target expert,
    summed over layers and supervised tokens (IGNORE targets are skipped).

    >>> logits = (torch.tensor([[0.0, 0.0], [5.0, 0.0]]),)
    >>> round(float(route_loss_sum(logits, torch.tensor([[1, -100]]))), 4)  # ln 2 for the first token only
    0.6931
    """
    flat = targets.reshape(-1)
    return sum(F.cross_entropy(layer.float(), flat, ignore_index=IGNORE, reduction="sum")
               for layer in router_logits)


def load_chat_files(cfg: StageConfig, tokenizer) -> list[list[data.Example]]:
    """Each data file's chats, tokenised with assistant-only labels."""
    return [data.tokenize_chats(p, tokenizer, cfg.sequences.seq_len, cfg.columns)[0] for p in cfg.data]


def _shards(paths: list[str], tokenizer, cfg: StageConfig, kind: str) -> data.Sequence:
    parts = [TokenShards(p).check(tokenizer, cfg.sequences.seq_len, kind) for p in paths]
    return parts[0] if len(parts) == 1 else data.Concatenated(parts)


def load_shards(cfg: StageConfig, tokenizer) -> data.Sequence:
    """The stage's data as token shards of its kind, read on demand: the SFT mixture's general share and route
    supervision as views over them, the router's stratified sample drawn per shard directory."""
    kind = "text" if cfg.stage in TEXT_STAGES else "chat"
    mix = cfg.mixture
    for key, paths in (("data", cfg.data), ("mixture.general_data", mix.general_data)):
        if paths and not all(is_shards(p) for p in paths):
            raise BarkitError(f"config key '{key}': token shards and JSONL files cannot be mixed (tokenise them all)")
    if cfg.stage == "router":
        per_file = [_shards([p], tokenizer, cfg, kind) for p in cfg.data]
        return data.stratified_sample(per_file, mix.sample_fraction, mix.min_rows_per_file, cfg.seed)
    domain = _shards(cfg.data, tokenizer, cfg, kind)
    general = _shards(mix.general_data, tokenizer, cfg, kind) if mix.general_data else []
    if cfg.route_supervision > 0:  # domain tokens -> expert 1, general tokens -> the anchor (expert 0)
        domain, general = data.with_route(domain, 1), data.with_route(general, 0)
    return data.mix(domain, general, mix.general_ratio or 0.0, cfg.seed)


def _to(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


class LMObjective(Objective):
    """Causal LM loss, normalised per target token over the whole global batch so results do not depend on
    how it is split over processes or micro-batches."""

    name = "lm"

    @classmethod
    def load(cls, cfg: StageConfig, tokenizer, settings) -> tuple[list, list]:
        """Text is packed; chats masked; the sft mixture and the router's stratified sample are drawn. Token
        shards (`barkit data tokenize`) are streamed instead of read into memory."""
        routed = cfg.route_supervision > 0  # domain tokens -> expert 1, general tokens -> the anchor (expert 0)
        seq_len, mix = cfg.sequences.seq_len, cfg.mixture
        if any(is_shards(p) for p in [*cfg.data, *mix.general_data]):
            return load_shards(cfg, tokenizer), []
        if cfg.stage in TEXT_STAGES:
            examples = data.pack_text(cfg.data, tokenizer, seq_len, cfg.columns)
            return (data.with_route(examples, 1) if routed else examples), []
        per_file = load_chat_files(cfg, tokenizer)
        if cfg.stage == "router":
            return data.stratified_sample(per_file, mix.sample_fraction, mix.min_rows_per_file, cfg.seed), []
        general = [e for p in mix.general_data for e in data.tokenize_chats(p, tokenizer, seq_len, cfg.columns)[0]]
        domain = [e for examples in per_file for e in examples]
        if routed:
            general, domain = data.with_route(general, 0), data.with_route(domain, 1)
        return data.mix(domain, general, mix.general_ratio or 0.0, cfg.seed), []

    def __init__(self, ctx, items, held_out, settings=None):
        super().__init__(ctx, items, held_out, settings)
        self.examples = items
        self.pad_id = ctx.tokenizer.pad_token_id
        self.pack = self.cfg.sequences.pack_chats and self.cfg.stage in CHAT_STAGES
        self.order = data.StepOrder(len(items), self.cfg.batch_size, self.cfg.seed)
        check_divisible(self.cfg, self.acc.num_processes)

    def batch(self, step: int) -> list[data.Example]:
        return [self.examples[i] for i in self.order.batch(step)]

    def collate(self, part: list[data.Example]) -> dict:
        seq_len = self.cfg.sequences.seq_len
        return collate_packed(part, self.pad_id, seq_len) if self.pack else collate(part, self.pad_id)

    def forward(self, inputs: dict, **extra):
        # use_cache=False also matters for packing: transformers only derives the per-chat (block-diagonal)
        # mask from restarting position ids when no cache is passed
        device = self.acc.device
        return self.model(input_ids=inputs["input_ids"].to(device),
                          attention_mask=_to(inputs["attention_mask"], device),
                          position_ids=_to(inputs.get("position_ids"), device), use_cache=False, **extra)

    def __call__(self, step: int, update: Update) -> dict:
        batch = self.batch(step)
        targets = sum(e.num_targets for e in batch)
        mine = shard(batch, self.acc.process_index, self.acc.num_processes)
        micro = len(mine) // self.cfg.grad_accum
        world = self.acc.num_processes
        loss_sum = torch.zeros((), device=self.acc.device)
        route_sum = torch.zeros((), device=self.acc.device)
        weight = self.cfg.route_supervision
        routed = sum(len(e.input_ids) for e in batch if e.route_to is not None) if weight > 0 else 0
        layers = 1
        for k in range(self.cfg.grad_accum):
            inputs = self.collate(mine[k * micro:(k + 1) * micro])
            sync = k == self.cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else self.acc.no_sync(self.model):
                out = self.forward(inputs, **({"output_router_logits": True} if routed else {}))
                loss = token_loss_sum(out.logits, inputs["labels"].to(self.acc.device))
                objective = loss * world / targets
                if routed:
                    layers = len(out.router_logits)
                    route = route_loss_sum(out.router_logits, inputs["route_targets"].to(self.acc.device))
                    objective = objective + weight * route * world / (routed * layers)
                    route_sum += route.detach()
                self.acc.backward(objective)
            loss_sum += loss.detach()
        grad_norm = update()
        total = self.acc.reduce(loss_sum, "sum") if world > 1 else loss_sum
        row = {"loss": float(total) / targets, "grad_norm": grad_norm, "targets": targets,
               "tokens": sum(len(e.input_ids) for e in batch)}
        if routed:
            route_total = self.acc.reduce(route_sum, "sum") if world > 1 else route_sum
            row["route_loss"] = float(route_total) / (routed * layers)
        return row
