"""The OpenAPI 3.1 document of the Bento API, built from the message models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bento import __version__
from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import (
    Ack,
    Attached,
    BlindTokenKey,
    BlindTokenRequest,
    BlindTokenResponse,
    Ended,
    ErrorBody,
    InputEnd,
    Invoked,
    InvokeRequest,
    InvokeResponse,
    Log,
    SessionInfo,
    SessionList,
    SessionLogs,
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
    SessionLogs,
    Invoked,
    Attached,
    Log,
    Ack,
    InputEnd,
    Ended,
    BlindTokenKey,
    BlindTokenRequest,
    BlindTokenResponse,
]
_C = ErrorCode
_AUTH = (_C.MISSING_TOKEN, _C.WRONG_TOKEN, _C.SINGLE_USE_TOKEN, _C.UNKNOWN_FUNCTION, _C.FUNCTION_EVICTED)
_SESSION = (*_AUTH, _C.UNKNOWN_SESSION, _C.SESSION_EXPIRED)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _responses(ok: int, model: type[BaseModel], *codes: ErrorCode) -> dict[str, Any]:
    """The success response, and one per HTTP status the codes travel with (bento.protocol.errors)."""
    out: dict[str, Any] = {str(ok): {"description": "success", **_json_body(model)}}
    for status in sorted({code.status for code in codes}):
        named = ", ".join(sorted(code.value for code in codes if code.status == status))
        out[str(status)] = {"description": f"refused: {named}", **_json_body(ErrorBody)}
    return out


def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    invocation: list[dict[str, list[str]]] = [{"invocationToken": []}]
    owner_or_right: list[dict[str, list[str]]] = [{"sessionRight": []}, {"shutdownToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bento box API",
            "version": __version__,
            "description": "Upload, invoke, talk to and shut down functions on a Bento box. Reached "
            "over Tor only. Session streams are WebSockets at /v1/sessions/{session_id}/stream "
            "(query logs_from: a log byte offset), and /v1/functions/{function_id}/invoke invokes "
            "and attaches in one round trip (the InvokeRequest, base64url JSON, in the "
            "Bento-Invocation header of the upgrade request, or as the first message; the box "
            "answers Invoked first): binary messages carry stream bytes both ways; text messages "
            "carry the JSON events Invoked, Attached, Log, Ack, InputEnd and Ended (see components). "
            "A session belongs to whoever opened it: its stream, logs, state and kill need the "
            "session right that invoking returned (docs/api.md, Rights).",
        },
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "invocationToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "invocation token: the owner's, or one narrowed from it (docs/api.md)",
                },
                "shutdownToken": {"type": "http", "scheme": "bearer", "description": "shutdown token"},
                "sessionRight": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "session right: returned by invoking, reaches that one session",
                },
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
                        _responses(
                            201,
                            UploadResponse,
                            _C.EXCEEDS_POLICY,
                            _C.BODY_TOO_LARGE,
                            _C.UPLOAD_TOO_LARGE,
                            _C.INVALID_REQUEST,
                            _C.BAD_CODE,
                            _C.BOX_PAUSED,
                            *_AUTH,  # of the function it replaces (UploadRequest.replaces)
                            _C.STORAGE_TOO_SMALL,
                        ),
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
                    "responses": _responses(200, ShutdownResponse, *_AUTH),
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
                        _responses(
                            201,
                            InvokeResponse,
                            *_AUTH,
                            _C.CAVEAT_REFUSED,
                            _C.UNKNOWN_ENTRY,
                            _C.BODY_TOO_LARGE,
                            _C.INVALID_REQUEST,
                            _C.FUNCTION_BUSY,
                            _C.BOX_FULL,
                            _C.BOX_STOPPING,
                            _C.BOX_PAUSED,
                        ),
                        201,
                        {"getSession": ("getSession", {"session_id": "$response.body#/session_id"})},
                    ),
                },
                "get": {
                    "operationId": "listSessions",
                    "summary": "the owner (shutdown token): every session; an invoker: those it names",
                    "security": [{"shutdownToken": []}, *invocation],
                    "parameters": [_path("function_id"), _rights_header()],
                    "responses": _responses(200, SessionList, *_AUTH),
                },
            },
            "/v1/functions/{function_id}/blind-tokens/{right}": {
                "get": {
                    "summary": "the key that signs this function's blinded tokens for a right",
                    "description": "Needs the plain token of the same right (invocation or shutdown).",
                    "parameters": [_path("function_id"), _right()],
                    "responses": _responses(200, BlindTokenKey, *_AUTH, _C.INVALID_REQUEST),
                },
                "post": {
                    "summary": "blind-sign token requests (RFC 9474): single-use, unlinkable rights",
                    "description": "Needs the plain token of the same right (invocation or shutdown).",
                    "parameters": [_path("function_id"), _right()],
                    "requestBody": {"required": True, **_json_body(BlindTokenRequest)},
                    "responses": _responses(
                        200,
                        BlindTokenResponse,
                        *_AUTH,
                        _C.BODY_TOO_LARGE,
                        _C.INVALID_REQUEST,
                        _C.BAD_BLINDED_TOKEN,
                    ),
                },
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "one session's state",
                    "security": owner_or_right,
                    "parameters": [_path("session_id")],
                    "responses": _responses(200, SessionInfo, *_SESSION),
                },
                "delete": {
                    "summary": "kill one session; returns its state once it has ended",
                    "security": owner_or_right,
                    "parameters": [_path("session_id")],
                    "responses": _responses(200, SessionInfo, *_SESSION),
                },
            },
            "/v1/sessions/{session_id}/logs": {
                "get": {
                    "summary": "what the session's function printed, as far as the box holds it",
                    "security": [{"sessionRight": []}],
                    "parameters": [_path("session_id")],
                    "responses": _responses(200, SessionLogs, *_SESSION),
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


def _rights_header() -> dict[str, Any]:
    return {
        "name": "Bento-Session-Rights",
        "in": "header",
        "required": False,
        "description": "with the invocation token: the session rights (comma-separated, at most 64) "
        "whose sessions to list; no others are listed",
        "schema": {"type": "string"},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _right() -> dict[str, Any]:
    return {"name": "right", "in": "path", "required": True, "schema": {"enum": ["invoke", "shutdown"]}}
