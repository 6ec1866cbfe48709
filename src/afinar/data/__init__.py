"""Datasets: reading, formats, validation against the target model's tokenizer and template, token
statistics, loss-mask previews, splits and leak checks, PII scanning and converters.

The Python API used by the CLI, the server's file validation and the training job::

    from afinar.data import validate_file, encode_example, parse_example
    report = validate_file("train.jsonl", tokenizer, max_seq_len=2048)
"""

from afinar.data.convert import convert_to_chat
from afinar.data.encode import Encoded, encode_chat, encode_example
from afinar.data.formats import Example, detect, parse_example
from afinar.data.issues import CODES, Issue
from afinar.data.leak import check_leak
from afinar.data.pii import Redactor, redact_file, scan_file, scan_text
from afinar.data.reader import Row, iter_rows
from afinar.data.split import split_file
from afinar.data.stats import default_epochs, summary
from afinar.data.validate import ValidationReport, validate_file

__all__ = [
    "CODES", "Encoded", "Example", "Issue", "Redactor", "Row", "ValidationReport", "check_leak",
    "convert_to_chat", "default_epochs", "detect", "encode_chat", "encode_example", "iter_rows",
    "parse_example", "redact_file", "scan_file", "scan_text", "split_file", "summary",
    "validate_file",
]
