"""``POST /v1/responses`` bodies as OpenAI's OpenAPI spec has them (input items, tools, text
formats), on the shared pieces of ``schemas.py``. Items a client copies back from a previous
response (``file_search_call``, ``reasoning``, output messages) keep what they carry."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from afinar.server.schemas import (MAX_ID, MAX_MESSAGES, MAX_TOOLS, Copied, FileSearchTool,
                                   FunctionName, Id, JsonObject, JsonObjectFormat, MetadataMap,
                                   Seed, Short, Strict, Temperature, Text, TextFormat, TopP,
                                   str_or_list)


class InputText(Strict):
    type: Literal["input_text", "text"]
    text: Text


class OutputText(Copied):
    type: Literal["output_text"]
    text: Text


class InputImage(Strict):
    type: Literal["input_image"]
    image_url: Text | None = None
    file_id: Id | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(Strict):
    type: Literal["input_file"]
    file_id: Id | None = None
    file_data: Text | None = None
    file_url: Text | None = None
    filename: Short | None = None


class Refusal(Copied):
    type: Literal["refusal"]
    refusal: Text


InputPart = Annotated[InputText | OutputText | InputImage | InputFile | Refusal,
                      Field(discriminator="type")]


class InputMessage(Strict):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str_or_list(Text, Annotated[list[InputPart], Field(max_length=MAX_MESSAGES)],
                         "an array of content parts")
    id: Id | None = None  # an output message copied back
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: Id
    name: FunctionName
    arguments: Text
    id: Id | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutput(Strict):
    type: Literal["function_call_output"]
    call_id: Id
    output: str_or_list(Text, Annotated[list[InputPart], Field(max_length=MAX_MESSAGES)],
                        "an array of content parts")
    id: Id | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class SkippedItem(Copied):
    type: Literal["file_search_call", "reasoning"]


def _item_kind(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "message"  # fails there, with the type it has
    t = v.get("type", "message")
    return t if t in ("message", "function_call", "function_call_output") else \
        "skipped" if t in ("file_search_call", "reasoning") else None


InputItem = Annotated[Annotated[InputMessage, Tag("message")]
                      | Annotated[FunctionCallItem, Tag("function_call")]
                      | Annotated[FunctionCallOutput, Tag("function_call_output")]
                      | Annotated[SkippedItem, Tag("skipped")],
                      Discriminator(_item_kind, custom_error_type="invalid_item",
                                    custom_error_message="type must be one of: message, "
                                    "function_call, function_call_output, file_search_call, "
                                    "reasoning")]


class ResponsesFunctionTool(Strict):
    type: Literal["function"]
    name: FunctionName
    description: Text | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


ResponsesTool = Annotated[ResponsesFunctionTool | FileSearchTool, Field(discriminator="type")]


class ResponsesNamedTool(Strict):
    type: Literal["function"]
    name: FunctionName


class HostedToolChoice(Strict):
    type: Literal["file_search"]


class ResponsesTextFormat(Strict):
    format: (TextFormat | JsonObjectFormat | ResponsesJsonSchema) | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesJsonSchema(Strict):
    type: Literal["json_schema"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    schema_: JsonObject = Field(alias="schema")
    description: Text | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


ResponsesTextFormat.model_rebuild()


class ResponsesRequest(Strict):
    model: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
    input: str_or_list(Text, Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)],
                       "an array of input items")
    instructions: Text | None = None
    tools: Annotated[list[ResponsesTool], Field(max_length=MAX_TOOLS)] = Field(
        default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedTool | HostedToolChoice = \
        "auto"
    include: Annotated[list[Short], Field(max_length=16)] | None = None
    temperature: Temperature = None
    top_p: TopP = None
    max_output_tokens: int | None = Field(None, ge=1)
    seed: Seed = None  # afinar's extension (reproducible answers)
    metadata: MetadataMap = None
    parallel_tool_calls: bool | None = True
    stream: bool | None = False
    previous_response_id: Id | None = None
    store: bool | None = None
    text: ResponsesTextFormat | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: Short | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    safety_identifier: Short | None = None
    prompt_cache_key: Short | None = None

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "max_tokens": self.max_output_tokens}
