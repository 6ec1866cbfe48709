"""Request bodies as OpenAI's OpenAPI spec (github.com/openai/openai-openapi) has them, checked
before any work: types, enums, bounds, list lengths, string sizes, finite numbers.

Unknown top-level fields and unknown fields in messages, tools and content parts are refused
(400), as OpenAI's service does ("Unrecognized request argument supplied"); objects the spec
leaves open (JSON schemas, metadata values) stay open. Extensions afinar accepts beyond OpenAI's
spec are named where they are declared (vLLM's ``top_k``/``min_p``/``repetition_penalty``,
``seed`` on responses, the ``file_search`` tool on chat completions). Items a client copies back
from a previous response (``file_search_call``, ``reasoning``, output messages) keep what they
carry. The bodies of ``/v1/responses`` are in ``schemas_responses.py``; validation errors
become OpenAI's error object through ``schema_errors.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator,
                      model_validator)

from afinar.errors import AfinarError

MAX_TEXT = 1_048_576  # characters in one string field (the JSON body cap bounds the total)
MAX_ID = 256
MAX_MESSAGES = 2048
MAX_TOOLS = 128  # OpenAI's limit on tools per request
MAX_VECTOR_STORES = 16  # per file_search tool
MAX_SEARCH_QUERIES = 10  # per vector-store search request
MAX_FILTER_ITEMS = 64


class Strict(BaseModel):
    """No coercion (``"yes"`` is not a boolean, ``"10"`` not a number), as OpenAI's service."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Copied(BaseModel):
    """An item copied back from a response: its other fields are kept and ignored."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


def _shape(v: Any) -> str | None:
    return "str" if isinstance(v, str) else "list" if isinstance(v, list) else None


def str_or_list(text: Any, items: Any, what: str = "an array") -> Any:
    """``text | items`` told apart by the JSON type, so an error names one alternative (a
    plain union reports every member's)."""
    return Annotated[Annotated[text, Tag("str")] | Annotated[items, Tag("list")],
                     Discriminator(_shape, custom_error_type="invalid_type",
                                   custom_error_message=f"expected a string or {what}")]


Text = Annotated[str, Field(max_length=MAX_TEXT)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Short = Annotated[str, Field(max_length=MAX_ID)]
FunctionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
JsonObject = dict[str, Any]
Temperature = Annotated[float | None, Field(None, ge=0, le=2)]
TopP = Annotated[float | None, Field(None, gt=0, le=1)]
Penalty = Annotated[float | None, Field(None, ge=-2, le=2)]
Seed = Annotated[int | None, Field(None, ge=0, le=2**63 - 1)]
MetadataMap = Annotated[dict[Annotated[str, Field(max_length=64)],
                             Annotated[str, Field(max_length=512)]] | None,
                        Field(None, max_length=16)]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Stops = Annotated[list[Stop], Field(max_length=4)]


# -- vector-store search: filters and ranking (chat's and responses' file_search, search) -------
Scalar = str | bool | int | float


class ComparisonFilter(Strict):
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: Annotated[str, Field(min_length=1, max_length=64)]
    value: Annotated[Scalar, Field(union_mode="left_to_right")] | Annotated[
        list[Annotated[Scalar, Field(union_mode="left_to_right")]],
        Field(max_length=MAX_FILTER_ITEMS)]

    @model_validator(mode="after")
    def _list_for_in(self) -> ComparisonFilter:
        if self.type in ("in", "nin") and not isinstance(self.value, list):
            raise ValueError(f"value must be a list for {self.type!r}")
        return self


class CompoundFilter(Strict):
    type: Literal["and", "or"]
    filters: Annotated[list[Filter], Field(min_length=1, max_length=MAX_FILTER_ITEMS)]


def _filter_kind(v: Any) -> str | None:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return "compound" if t in ("and", "or") else "comparison" if isinstance(t, str) else None


Filter = Annotated[Annotated[ComparisonFilter, Tag("comparison")]
                   | Annotated[CompoundFilter, Tag("compound")], Discriminator(_filter_kind)]
CompoundFilter.model_rebuild()


class HybridSearch(Strict):
    embedding_weight: float = Field(ge=0)
    text_weight: float = Field(ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> HybridSearch:
        if self.embedding_weight + self.text_weight <= 0:
            raise ValueError("embedding_weight and text_weight must not both be 0")
        return self


class RankingOptions(Strict):
    # OpenAI's values ("auto"/"default-*": no rerank unless AFINAR_RERANKER names one) or,
    # an afinar extension, a reranker: llm, llm:MODEL, cross-encoder:PATH, overlap
    ranker: str | None = None
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)
    hybrid_search: HybridSearch | None = None

    @field_validator("ranker")
    @classmethod
    def _known_ranker(cls, v: str | None) -> str | None:
        from afinar.rag.rerank import OPENAI_RANKERS, parse_name

        if v is not None and v not in OPENAI_RANKERS:
            try:
                parse_name(v)
            except AfinarError as e:
                raise ValueError(f"{e}, or one of {', '.join(OPENAI_RANKERS)}") from None
        return v


SearchQuery = Annotated[str, Field(min_length=1, max_length=4096)]
SearchQueries = str_or_list(SearchQuery, Annotated[
    list[SearchQuery], Field(min_length=1, max_length=MAX_SEARCH_QUERIES)], "an array of strings")


class FileSearchTool(Strict):
    """The ``file_search`` tool of responses (OpenAI's) and of chat completions (afinar's)."""
    type: Literal["file_search"]
    vector_store_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_VECTOR_STORES)]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: RankingOptions | None = None

    def spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# -- chat completions --------------------------------------------------------------------------
class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ImageURL(Strict):
    url: Text
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(Strict):
    data: Text
    format: Literal["wav", "mp3"]


class AudioPart(Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(Strict):
    file_data: Text | None = None
    file_id: Id | None = None
    filename: Short | None = None


class FilePart(Strict):
    type: Literal["file"]
    file: FileRef


class RefusalPart(Strict):
    type: Literal["refusal"]
    refusal: Text


TextParts = Annotated[list[TextPart], Field(min_length=1)]
UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(Strict):
    name: FunctionName
    arguments: Text


class ToolCall(Strict):
    id: Id
    type: Literal["function"]
    function: FunctionCall


class _Named(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class SystemMessage(_Named):
    role: Literal["system"]
    content: str_or_list(Text, TextParts, "an array of text parts")


class DeveloperMessage(_Named):
    role: Literal["developer"]
    content: str_or_list(Text, TextParts, "an array of text parts")


class UserMessage(_Named):
    role: Literal["user"]
    content: str_or_list(Text, Annotated[list[UserPart], Field(min_length=1)],
                         "an array of content parts")


class AssistantAudio(Strict):
    id: Id


class AssistantMessage(_Named):
    role: Literal["assistant"]
    content: str_or_list(Text, Annotated[list[AssistantPart], Field(min_length=1)],
                         "an array of content parts") | None = None
    refusal: Text | None = None
    audio: AssistantAudio | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    function_call: FunctionCall | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(Strict):
    role: Literal["tool"]
    content: str_or_list(Text, TextParts, "an array of text parts")
    tool_call_id: Id


class FunctionMessage(Strict):
    role: Literal["function"]
    content: Text | None
    name: FunctionName


ChatMessage = Annotated[SystemMessage | DeveloperMessage | UserMessage | AssistantMessage
                        | ToolMessage | FunctionMessage, Field(discriminator="role")]


class FunctionDef(Strict):
    name: FunctionName
    description: Text | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class FunctionTool(Strict):
    type: Literal["function"]
    function: FunctionDef


ChatTool = Annotated[FunctionTool | FileSearchTool, Field(discriminator="type")]


class NamedFunction(Strict):
    name: FunctionName


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Text | None = None
    schema_: JsonObject | None = Field(None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat,
                           Field(discriminator="type")]


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class Sampled(Strict):
    """What chat completions and completions share. ``None``: omitted (the model's recommended
    sampling applies, ``Catalog.sampling_defaults``)."""
    model: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
    temperature: Temperature = None
    top_p: TopP = None
    top_k: int | None = Field(None, ge=0, description="vLLM's extension; 0: off")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM's extension")
    repetition_penalty: float | None = Field(None, gt=0, le=10,
                                             description="vLLM's extension")
    max_tokens: int | None = Field(None, ge=1)
    stop: str_or_list(Stop, Stops, "an array of strings") | None = None
    seed: Seed = None
    n: int = Field(1, ge=1, le=8)
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    logit_bias: Annotated[dict[Short, Annotated[int, Field(ge=-100, le=100)]] | None,
                          Field(None, max_length=300)] = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: Short | None = None
    store: bool | None = None
    metadata: MetadataMap = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    safety_identifier: Short | None = None
    prompt_cache_key: Short | None = None

    def sampling(self) -> dict[str, Any]:
        """The sampling fields as given (``None``: omitted)."""
        return {k: getattr(self, k) for k in ("temperature", "top_p", "top_k", "min_p",
                                              "repetition_penalty", "stop", "seed",
                                              "frequency_penalty", "presence_penalty")}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampled):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ChatTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    modalities: list[Literal["text", "audio"]] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    functions: Annotated[list[FunctionDef], Field(max_length=MAX_TOOLS)] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None

    def chat_messages(self) -> list[dict[str, Any]]:
        """The messages as plain dicts for the template (``developer`` read as ``system``)."""
        out = []
        for m in self.messages:
            d = m.model_dump(exclude_none=True)
            if d["role"] == "developer":
                d["role"] = "system"
            out.append(d)
        return out

    def function_tools(self) -> list[dict[str, Any]]:
        return [t.model_dump(exclude_none=True) for t in self.tools or []
                if isinstance(t, FunctionTool)]

    def file_search(self) -> FileSearchTool | None:
        return next((t for t in self.tools or [] if isinstance(t, FileSearchTool)), None)


class CompletionRequest(Sampled):
    prompt: str_or_list(Text, Annotated[list[Text], Field(min_length=1, max_length=64)],
                        "an array of strings")
    max_tokens: int | None = Field(16, ge=1)
    echo: Literal[False] | None = False  # echoing the prompt back is not supported
    best_of: Literal[1] | None = None
    logprobs: None = None  # not supported
    suffix: None = None  # not supported


# -- embeddings --------------------------------------------------------------------------------
def _embedding_input(v: Any) -> str | None:
    if isinstance(v, str):
        return "text"
    if not isinstance(v, list):
        return None
    first = v[0] if v else ""
    return ("texts" if isinstance(first, str) else "token_lists" if isinstance(first, list)
            else "tokens")


class EmbeddingRequest(Strict):
    input: Annotated[
        Annotated[Text, Tag("text")]
        | Annotated[Annotated[list[Text], Field(max_length=2048)], Tag("texts")]
        | Annotated[Annotated[list[int], Field(max_length=8192)], Tag("tokens")]
        | Annotated[Annotated[list[Annotated[list[int], Field(max_length=8192)]],
                              Field(max_length=2048)], Tag("token_lists")],
        Discriminator(_embedding_input, custom_error_type="invalid_type",
                      custom_error_message="expected a string, an array of strings or an "
                                           "array of token arrays")]
    model: Annotated[str, Field(min_length=1, max_length=MAX_ID)] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: Short | None = None


__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "FileSearchTool",
           "Filter", "RankingOptions", "SearchQueries"]
