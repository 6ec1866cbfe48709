"""Findings about a dataset: an error or warning with a stable code, the line it is on and the field.

Codes follow OpenAI's fine-tuning data taxonomy where one exists (``data_type``,
``missing_messages_list``, ``message_missing_key``, ``message_unrecognized_key``,
``unrecognized_role``, ``missing_content``, ``example_missing_assistant_message``); the rest are
afinar's own and listed in ``CODES``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CODES: dict[str, str] = {
    # reading the file
    "empty_file": "the file has no examples",
    "binary_file": "the file is not text (NUL bytes)",
    "invalid_utf8": "a line is not valid UTF-8",
    "invalid_json": "a line is not valid JSON",
    "line_too_long": "a line is longer than the reader's limit",
    "unsupported_file_type": "the file extension is not a dataset format afinar reads",
    "invalid_csv": "the CSV cannot be parsed or lacks a mapped column",
    # shape of one example (OpenAI's taxonomy first)
    "data_type": "the example is not a JSON object",
    "missing_messages_list": "no (or empty) messages list",
    "message_missing_key": "a message lacks a required key",
    "message_unrecognized_key": "a message has a key OpenAI's format does not define",
    "unrecognized_role": "a message role is not system/user/assistant/tool",
    "missing_content": "a message has no content (and no tool_calls)",
    "example_missing_assistant_message": "no assistant message to learn from",
    "inconsistent_format": "the example's format differs from the file's",
    "unknown_format": "the example matches no dataset format",
    "invalid_weight": "an assistant weight is not 0 or 1",
    "no_trained_tokens": "every assistant message has weight 0: nothing to learn",
    "invalid_tool_call": "an assistant tool call is malformed",
    "unmatched_tool_call_id": "a tool message answers a call id no assistant made",
    "invalid_tools": "the tools list is malformed",
    "invalid_field": "a field has the wrong type or is empty",
    "unsupported_content": "message content parts afinar cannot train on (images, audio)",
    "duplicate_example": "the same example appears earlier in the file",
    # sizes
    "too_few_examples": "fewer than 10 examples (OpenAI's minimum)",
    "few_examples": "fewer than 50 examples (OpenAI advises 50-100 to see gains)",
    "example_too_long": "over the max sequence length: truncation would cut trained tokens",
    "example_over_length_untrained": "over the max sequence length, but only untrained tokens are cut",
    "template_error": "the model's chat template cannot render the example",
    "special_token_in_content": "message text contains a special token of the tokenizer",
    "missing_system_message": "no system message",
}


@dataclass
class Issue:
    code: str
    message: str
    line: int | None = None
    field: str | None = None
    severity: str = "error"  # error | warning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        fld = f" [{self.field}]" if self.field else ""
        return f"{where}{fld}: {self.code}: {self.message}"
