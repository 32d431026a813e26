"""The OpenAPI 3.1 document of the Bento API, built from the message models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bento import __version__
from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.messages import (
    Ack,
    Attached,
    Ended,
    ErrorBody,
    InputEnd,
    InvokeRequest,
    InvokeResponse,
    SessionInfo,
    SessionList,
    ShutdownResponse,
    UploadRequest,
    UploadResponse,
)

_MODELS: list[type[BaseModel]] = [
    SignedDescriptor,
    UploadRequest,
    UploadResponse,
    InvokeRequest,
    InvokeResponse,
    SessionInfo,
    SessionList,
    ShutdownResponse,
    ErrorBody,
    Attached,
    Ack,
    InputEnd,
    Ended,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _responses(ok: int, model: type[BaseModel], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": "success", **_json_body(model)}}
    for status in errors:
        out[str(status)] = {"description": "refused; see the error code", **_json_body(ErrorBody)}
    return out


def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    invocation: list[dict[str, list[str]]] = [{"invocationToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bento box API",
            "version": __version__,
            "description": "Upload, invoke, talk to and shut down functions on a Bento box. Reached "
            "over Tor only. Session streams are WebSockets at /v1/sessions/{session_id}/stream: "
            "binary messages carry stream bytes both ways; text messages carry the JSON events "
            "Attached, Ack, InputEnd and Ended (see components).",
        },
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "invocationToken": {"type": "http", "scheme": "bearer", "description": "invocation token"},
                "shutdownToken": {"type": "http", "scheme": "bearer", "description": "shutdown token"},
            },
        },
        "paths": {
            "/v1/descriptor": {
                "get": {
                    "operationId": "getDescriptor",
                    "summary": "the box's signed descriptor",
                    "responses": _responses(200, SignedDescriptor),
                }
            },
            "/v1/functions": {
                "post": {
                    "operationId": "upload",
                    "summary": "upload a function",
                    "requestBody": {"required": True, **_json_body(UploadRequest)},
                    "responses": _linked(
                        _responses(201, UploadResponse, 403, 413, 422),
                        201,
                        {
                            "invoke": ("invoke", {"function_id": "$response.body#/function_id"}),
                            "listSessions": ("listSessions", {"function_id": "$response.body#/function_id"}),
                            "shutdown": ("shutdown", {"function_id": "$response.body#/function_id"}),
                        },
                    ),
                }
            },
            "/v1/functions/{function_id}": {
                "delete": {
                    "operationId": "shutdown",
                    "summary": "shut a function down: kill its instances, delete its code and tokens",
                    "security": [{"shutdownToken": []}],
                    "parameters": [_path("function_id")],
                    "responses": _responses(200, ShutdownResponse, 401, 403, 404),
                }
            },
            "/v1/functions/{function_id}/sessions": {
                "post": {
                    "operationId": "invoke",
                    "summary": "invoke an entry point: starts a session",
                    "security": invocation,
                    "parameters": [_path("function_id")],
                    "requestBody": {"required": True, **_json_body(InvokeRequest)},
                    "responses": _linked(
                        _responses(201, InvokeResponse, 401, 403, 404, 413, 422, 503),
                        201,
                        {"getSession": ("getSession", {"session_id": "$response.body#/session_id"})},
                    ),
                },
                "get": {
                    "operationId": "listSessions",
                    "summary": "list the function's sessions",
                    "security": invocation,
                    "parameters": [_path("function_id")],
                    "responses": _responses(200, SessionList, 401, 403, 404),
                },
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "one session's state",
                    "security": invocation,
                    "parameters": [_path("session_id")],
                    "responses": _responses(200, SessionInfo, 401, 403, 404, 410),
                }
            },
        },
    }


def _linked(
    responses: dict[str, Any], status: int, links: dict[str, tuple[str, dict[str, str]]]
) -> dict[str, Any]:
    """OpenAPI links from a response to the operations it enables (upload -> invoke -> session)."""
    responses[str(status)]["links"] = {
        name: {"operationId": operation, "parameters": parameters}
        for name, (operation, parameters) in links.items()
    }
    return responses


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
