"""Findings about a dataset: an error or warning with a stable code, the line it is on and the field.

Codes follow OpenAI's fine-tuning data taxonomy where one exists (``data_type``,
``missing_messages_list``, ``message_missing_key``, ``message_unrecognized_key``,
``unrecognized_role``, ``missing_content``, ``example_missing_assistant_message``); the rest are
afinar's own. ``CODES`` lists every code with its severity: only what makes training impossible
or wrong is an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

E, W = "error", "warning"

# code -> (severity, meaning). Errors block an upload for fine-tuning and a job: each makes
# training impossible (nothing to parse or learn) or wrong (a role, weight or tool call the model
# would learn from garbled). Warnings never block; they come with counts and lines from
# ``afinar data validate``, on upload and in a job's events. docs/data-validation.md has the same
# table with what to do about each.
CODES: dict[str, tuple[str, str]] = {
    # reading the file
    "empty_file": (E, "the file has no examples"),
    "binary_file": (E, "the file is not text (NUL bytes)"),
    "invalid_utf8": (E, "a line is not valid UTF-8"),
    "invalid_json": (E, "a line is not valid JSON"),
    "line_too_long": (E, "a line is longer than the reader's limit"),
    "unsupported_file_type": (E, "the file extension is not a dataset format afinar reads"),
    "invalid_csv": (E, "the CSV cannot be parsed or lacks a mapped column"),
    # shape of one example (OpenAI's taxonomy first)
    "data_type": (E, "the example is not a JSON object"),
    "missing_messages_list": (E, "no (or empty) messages list"),
    "message_missing_key": (E, "a message lacks a required key"),
    "message_unrecognized_key": (E, "a message has a key OpenAI's format does not define"),
    "unrecognized_role": (E, "a message role is not system/user/assistant/tool"),
    "missing_content": (E, "a message has no content (and no tool_calls)"),
    "example_missing_assistant_message": (E, "no assistant message to learn from"),
    "inconsistent_format": (E, "the example's format differs from the file's"),
    "unknown_format": (E, "the example matches no dataset format"),
    "invalid_weight": (E, "an assistant weight is not 0 or 1 (a warning on other roles, where "
                          "it is ignored)"),
    "no_trained_tokens": (E, "every assistant message has weight 0: nothing to learn"),
    "invalid_tool_call": (E, "an assistant tool call is malformed"),
    "unmatched_tool_call_id": (E, "a tool message answers a call id no assistant made"),
    "invalid_tools": (E, "the tools list is malformed"),
    "invalid_field": (E, "a field has the wrong type or is empty"),
    "unsupported_content": (E, "message content parts afinar cannot train on (images, audio)"),
    "template_error": (E, "the model's chat template cannot render the example"),
    # sizes
    "too_few_examples": (E, "a training file with fewer than 10 examples (OpenAI's minimum; a "
                            "validation file has no minimum)"),
    "example_too_long": (E, "over the max sequence length: truncation would cut trained tokens"),
    # warnings: training works, but the data may not say what you mean
    "duplicate_example": (W, "the same example appears earlier in the file (weights aside)"),
    "near_duplicate_example": (W, "the same text as an earlier example but for case, "
                                  "punctuation or spacing"),
    "few_examples": (W, "fewer than 50 examples (OpenAI advises 50-100 to see gains)"),
    "example_over_length_untrained": (W, "over the max sequence length, but only untrained "
                                         "tokens are cut"),
    "special_token_in_content": (W, "message text contains a special token of the tokenizer"),
    "missing_system_message": (W, "examples without a system message"),
    "label_imbalance": (W, "answers are short labels and one label outnumbers another 10x or "
                           "more"),
}


def blocks(code: str) -> bool:
    """Whether an issue with this code blocks training (an error), by the table above."""
    return CODES.get(code, (E, ""))[0] == E


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
