"""Distillation: train on a teacher's full next-token distributions instead of the one-hot labels.

Each data file has its teacher (`objective_args.teachers`, in the order of `data`): at every assistant
token the student minimises the cross-entropy against that teacher's distribution. Used for the router
stage of a composed MoE, each domain's chats get their own 2x expert as teacher (and general chats the
dense anchor), so the router sees where every expert helps rather than only the sampled token. Teacher
distributions are computed once before training, one teacher in memory at a time, and kept in fp16 at
the target positions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM

from barkit.errors import BarkitError
from barkit.train import data
from barkit.train.objectives.base import Update, shard
from barkit.train.objectives.lm import LMObjective, load_chat_files, token_loss_sum
from barkit.train.stages import StageConfig


@dataclass
class DistillSettings:
    teachers: list[str] = field(default_factory=list, metadata={
        "help": "one teacher checkpoint per data file, in the same order"})
    batch_size: int = field(default=64, metadata={"help": "sequences per teacher forward pass"})

    def validate(self) -> None:
        if not self.teachers:
            raise BarkitError("config key 'objective_args.teachers': one teacher checkpoint per data file")
        if self.batch_size < 1:
            raise BarkitError("config key 'objective_args.batch_size': must be >= 1")


@dataclass(eq=False)  # identity hashing: examples are keys of the teacher table
class TaughtExample(data.Example):
    """A chat with its teacher's probabilities at the target positions (position p predicts token p + 1)."""

    positions: torch.Tensor | None = None
    probs: torch.Tensor | None = None


@torch.no_grad()
def teacher_targets(examples: list[data.Example], teacher_dir: str, batch_size: int) -> list[TaughtExample]:
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, local_files_only=True, use_safetensors=True).eval()
    taught = []
    for start in range(0, len(examples), batch_size):
        part = examples[start:start + batch_size]
        batch = data.collate(part, 0)  # right padding under an attention mask: the pad id does not matter
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).logits.float()
        for k, example in enumerate(part):
            labels = torch.tensor(example.labels)
            positions = (labels[1:] != data.IGNORE).nonzero().flatten()
            taught.append(TaughtExample(**vars(example), positions=positions,
                                        probs=torch.softmax(logits[k, positions], -1).half()))
    del teacher
    return taught


class DistillObjective(LMObjective):
    """Cross-entropy against the teachers' distributions, normalised per target token over the global batch;
    the hard-label loss is reported alongside (`loss`), the distillation loss as `distill`."""

    name = "distill"
    Settings = DistillSettings

    @classmethod
    def load(cls, cfg: StageConfig, tokenizer, settings: DistillSettings) -> tuple[list, list]:
        if len(settings.teachers) != len(cfg.data):
            raise BarkitError(f"config key 'objective_args.teachers': {len(settings.teachers)} teachers for "
                              f"{len(cfg.data)} data files (one each, same order)")
        per_file = load_chat_files(cfg, tokenizer)
        if cfg.stage == "router":  # the rows the LM objective's stratified sample would draw
            mix = cfg.mixture
            per_file = data.stratified_sample_per_file(per_file, mix.sample_fraction, mix.min_rows_per_file,
                                                       cfg.seed)
        taught = [teacher_targets(examples, teacher, settings.batch_size)
                  for examples, teacher in zip(per_file, settings.teachers)]
        return [e for examples in taught for e in examples], []

    def __call__(self, step: int, update: Update) -> dict:
        batch = self.batch(step)
        targets = sum(e.num_targets for e in batch)
        mine = shard(batch, self.acc.process_index, self.acc.num_processes)
        micro, world = len(mine) // self.cfg.grad_accum, self.acc.num_processes
        sums = torch.zeros(2, device=self.acc.device)  # (hard-label loss, distillation loss)
        for k in range(self.cfg.grad_accum):
            part = mine[k * micro:(k + 1) * micro]
            inputs = self.collate(part)
            out = self.forward(inputs)
            logp = torch.log_softmax(out.logits.float(), -1)
            soft = logp.new_zeros(())
            rows = data.pack_rows(part, self.cfg.sequences.seq_len) if self.pack else [[e] for e in part]
            for r, row in enumerate(rows):  # the rows `collate` built, examples in order within each
                offset = 0
                for example in row:
                    soft = soft - (example.probs.float().to(logp.device) * logp[r, offset + example.positions]).sum()
                    offset += len(example.input_ids)
            self.acc.backward(soft * world / targets)
            hard = token_loss_sum(out.logits.detach(), inputs["labels"].to(self.acc.device))
            sums += torch.stack([hard, soft.detach()])
        grad_norm = update()
        total = self.acc.reduce(sums, "sum") if world > 1 else sums
        return {"loss": float(total[0]) / targets, "distill": float(total[1]) / targets, "grad_norm": grad_norm,
                "targets": targets, "tokens": sum(len(e.input_ids) for e in batch)}
