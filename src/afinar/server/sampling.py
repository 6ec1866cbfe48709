"""What chat completions and responses share: the model's recommended sampling for what a
request omits, and JSON mode (``response_format`` / ``text.format``) as a schema to constrain to."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from afinar.errors import InvalidRequest
from afinar.models.catalog import Catalog
from afinar.models.constrained import ANY_OBJECT
from afinar.server.common import require_model


def sampling_defaults(request: Request, model: str) -> dict[str, Any]:
    """The model's recommended sampling (``Catalog.sampling_defaults``), for what a request
    omits; an unknown model is the catalog's 404, before anything loads, and so is another
    project's fine-tuned model."""
    defaults = Catalog(request.app.state.settings).sampling_defaults(model)
    require_model(request, model)
    return defaults


def json_mode(fmt: Any) -> tuple[dict[str, Any] | None, dict | None]:
    """(the schema to constrain to, the schema to show in the hint); ``(None, None)`` for text.
    ``fmt``: chat's ``response_format`` (or the responses API's ``text.format``)."""
    if fmt is None or fmt.type == "text":
        return None, None
    if fmt.type == "json_object":
        return ANY_OBJECT, None
    spec = getattr(fmt, "json_schema", fmt)  # chat nests it; responses does not
    schema = spec.schema_
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs json_schema.schema",
                             param="response_format.json_schema")
    if spec.strict:
        return schema, schema
    own = schema.get("x-guidance")  # llguidance's options inside a schema
    lenient = {"lenient": True, **(own if isinstance(own, dict) else {})}  # unknown keys ignored
    return {**schema, "x-guidance": lenient}, schema
