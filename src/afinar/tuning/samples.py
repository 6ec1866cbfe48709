"""Training data as token ids and loss masks, batched by length with dynamic padding.

A dataset reaches this module only after ``afinar.data.validate_file`` accepted it (training
refuses what the validator rejects). Batches group examples of similar length (within a shuffled
window) and pad to the longest in the batch, so little compute goes to padding; the order of an
epoch is a pure function of (seed, epoch), so a resumed job sees exactly the same batches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from afinar.data.encode import Encoded, encode_example
from afinar.data.formats import parse_example
from afinar.data.issues import Issue
from afinar.data.reader import iter_rows
from afinar.data.validate import ValidationReport, validate_file
from afinar.errors import InvalidRequest

WINDOW = 32  # batches per length-sorting window


class DatasetRejected(InvalidRequest):
    code = "invalid_training_file"

    def __init__(self, report: ValidationReport, param: str, name: str | None = None):
        first = "; ".join(str(e) for e in report.errors[:3])
        codes = ", ".join(f"{c} x{n}" for c, n in report.counts.items())
        super().__init__(f"{name or Path(report.path).name} failed validation ({codes}): {first}",
                         param=param)
        self.report = report


@dataclass
class Sample:
    seq: Encoded  # for DPO: the chosen sequence; for RFT: the prompt
    rejected: Encoded | None = None
    label: bool | None = None  # unpaired (KTO): a desirable answer or not
    item: dict | None = None  # RFT: the row without messages/tools, what the grader reads

    @property
    def length(self) -> int:
        return max(self.seq.n_tokens, self.rejected.n_tokens if self.rejected else 0)


def _accepted_formats(data_kind: str) -> tuple[str, ...]:
    return {"sft": ("chat", "completion"), "text": ("text",),
            "preference": ("preference",),
            "unpaired": ("unpaired",), "prompt": ("prompt",)}[data_kind]


def expected_format(data_kind: str) -> str | None:
    """The format the validator must read a data kind's rows as (None: detect it). RFT prompts
    (``prompt``) look like chat rows without the answer, so only this says what they are."""
    return "prompt" if data_kind == "prompt" else None


def load_samples(path: str | Path, tok, data_kind: str, max_seq_len: int,
                 param: str = "training_file", name: str | None = None,
                 role: str = "training") -> tuple[list[Sample], ValidationReport]:
    report = validate_file(path, tok, max_seq_len=max_seq_len, role=role,
                           expected_format=expected_format(data_kind))
    if not report.ok:
        raise DatasetRejected(report, param, name)
    if report.format not in _accepted_formats(data_kind):
        raise InvalidRequest(
            f"{name or Path(path).name} holds {report.format} examples; this method trains on "
            f"{' or '.join(_accepted_formats(data_kind))} data", param=param)
    out: list[Sample] = []
    for row in iter_rows(path):
        if isinstance(row, Issue):
            continue
        ex, _ = parse_example(row.data, row.line, report.format)
        if ex is None:
            continue
        enc = encode_example(tok, ex)
        if isinstance(enc, tuple):
            out.append(Sample(enc[0], enc[1]))
        elif ex.format == "prompt":
            out.append(Sample(enc, item=ex.item))
        elif ex.format == "unpaired":
            out.append(Sample(enc, label=ex.label))
        elif ex.format == "text":  # long documents: blocks of max_seq_len, never across documents
            for i in range(0, enc.n_tokens, max_seq_len):
                block = Encoded(enc.input_ids[i:i + max_seq_len], enc.trained[i:i + max_seq_len])
                if block.n_tokens > 1:
                    out.append(Sample(block))
        else:
            out.append(Sample(enc))
    # the validator refused over-length examples that would lose trained tokens; cut the rest
    for s in out:
        for e in (s.seq, s.rejected):
            if e is not None and e.n_tokens > max_seq_len:
                del e.input_ids[max_seq_len:], e.trained[max_seq_len:]
    return out, report


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of indices for one epoch: shuffled, length-grouped within windows, shuffled again."""
    rnd = random.Random(f"afinar:{seed}:{epoch}")
    idx = list(range(len(lengths)))
    rnd.shuffle(idx)
    span = batch_size * WINDOW
    batches: list[list[int]] = []
    for i in range(0, len(idx), span):
        window = sorted(idx[i:i + span], key=lambda j: lengths[j])
        batches += [window[k:k + batch_size] for k in range(0, len(window), batch_size)]
    rnd.shuffle(batches)
    return batches


def collate(seqs: list[Encoded], pad_id: int):
    """Right-padded input ids, attention mask, and next-token targets (-100 where not trained)."""
    import torch

    width = max(e.n_tokens for e in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    targets = torch.full((len(seqs), width), -100, dtype=torch.long)
    for b, e in enumerate(seqs):
        n = e.n_tokens
        ids[b, :n] = torch.tensor(e.input_ids)
        mask[b, :n] = 1
        # position t predicts token t+1: a target exists where token t+1 is trained
        nxt = torch.tensor(e.input_ids[1:])
        trained = torch.tensor(e.trained[1:], dtype=torch.bool)
        targets[b, : n - 1] = torch.where(trained, nxt, torch.full_like(nxt, -100))
    return ids, mask, targets
