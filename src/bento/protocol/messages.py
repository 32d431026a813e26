"""The Bento HTTP + WebSocket API, as Pydantic models (see docs/api.md).

Every request body is validated against these models at the edge; anything else is
refused with a 4xx and an :class:`ErrorBody` saying what is wrong.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bento.protocol.errors import ErrorCode
from bento.protocol.manifest import Manifest


class Strict(BaseModel):
    # defer_build: each schema is built when first used, so a command builds only its own.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ErrorBody(Strict):
    error: str = Field(description="what went wrong, in words")
    code: ErrorCode = Field(description="a stable machine-readable code (see docs/api.md, Errors)")
    fix: str | None = Field(default=None, description="what to do about it, when known")


class CodeKind(StrEnum):
    MODULE = "module"  # one Python source file
    TAR_GZ = "tar.gz"  # a directory archive (gzip-compressed tar)


class Replaces(Strict):
    """The function on the same box that an upload replaces, proven by its shutdown token."""

    function_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    shutdown_token: str = Field(min_length=1, max_length=1024, repr=False)
    keep_storage: bool = Field(
        default=True, description="the new function takes over its storage; false: the storage is shredded"
    )


class UploadRequest(Strict):
    manifest: Manifest
    kind: CodeKind = CodeKind.MODULE
    code: str = Field(
        description="the code, base64-encoded (RFC 4648, with padding)",
        pattern=r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    )
    replaces: Replaces | None = Field(
        default=None, description="shut this function down once the new one is installed"
    )


class Replaced(Strict):
    function_id: str = Field(description="the function that was shut down")
    sessions_stopped: int
    storage_bytes: int = Field(description="bytes of storage the new function took over (0 if shredded)")
    storage_objects: int = Field(description="objects the new function took over")


class UploadResponse(Strict):
    function_id: str
    invocation_token: str = Field(
        description="lets its holder invoke, and narrow it offline for others (docs/api.md); keep it secret"
    )
    shutdown_token: str = Field(description="lets its holder shut the function down; keep it secret")
    entry_points: list[str] = Field(description="top-level functions of the module")
    boot_id: str = Field(description="changes whenever the server restarts")
    replaced: Replaced | None = Field(default=None, description="what became of the replaced function")


class InvokeRequest(Strict):
    entry: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)
    args: list[Any] = Field(default_factory=list, description="JSON positional arguments")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="JSON keyword arguments")


class InvokeResponse(Strict):
    session_id: str
    session_right: str = Field(
        description="the session's own capability: attach, logs, state and kill need it (docs/api.md, Rights)"
    )


class SessionState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    KILLED = "killed"


class EndCause(StrEnum):
    """Why a session ended."""

    COMPLETED = "completed"  # the function returned
    ERROR = "error"  # it raised, or its process died
    MEMORY = "memory"  # killed: over its memory limit
    CPU = "cpu"  # killed: over its CPU-time limit
    WALL = "wall"  # killed: over its wall-clock limit
    OUTPUT = "output"  # killed: sent more than its output limit
    POLICY = "policy"  # killed: broke the sandbox's rules (e.g. the channel protocol)
    SHUTDOWN = "shutdown"  # killed: its function was shut down, the server stopped, or its client killed it


class ResourceUsage(Strict):
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    log_bytes: int = Field(default=0, description="bytes the function printed (its logs)")
    network_granted: int = Field(default=0, description="broker requests granted")
    network_denied: int = Field(default=0, description="broker requests refused")
    circuits: int = Field(default=0, description="Tor circuits it built")
    onion_services: int = Field(default=0, description="onion services it published")
    held: dict[str, int] = Field(
        default_factory=dict,
        max_length=32,
        description="what its function holds now against each per-function budget (listeners, "
        "onion_services, circuits, circuits_per_minute, streams, storage_transfers, storage_bytes, lookups)",
    )
    budgets: dict[str, int] = Field(
        default_factory=dict, max_length=32, description="each per-function budget: the most it may hold"
    )


class FunctionError(Strict):
    type: str
    message: str
    traceback: str = ""


class SessionInfo(Strict):
    session_id: str
    entry: str
    state: SessionState
    attached: bool
    started_at: float
    ended_at: float | None = None
    bytes_out: int = Field(description="bytes the function has sent")
    bytes_in: int = Field(description="bytes the client has sent")
    buffered: int = Field(description="output bytes not yet acknowledged by a client")
    output_expired: bool = Field(
        default=False, description="its unacknowledged output was dropped to bound the box's memory"
    )
    cause: EndCause | None = Field(default=None, description="why it ended, once it has")
    reason: str = ""
    usage: ResourceUsage = Field(default_factory=ResourceUsage)


class SessionList(Strict):
    function_id: str
    sessions: list[SessionInfo]


class ShutdownResponse(Strict):
    function_id: str
    sessions_stopped: int


# Base64 of one RSA-2048 blinded message or blind signature (256 bytes): 344 characters.
_BLIND_B64 = Field(pattern=r"^[A-Za-z0-9+/]{342}==$|^[A-Za-z0-9+/]{343}=$|^[A-Za-z0-9+/]{344}$")


class BlindTokenRequest(Strict):
    """Ask for single-use rights the box signs without seeing (RFC 9474; see docs/api.md)."""

    right: Literal["invoke", "shutdown"] = Field(description="the right the tokens carry")
    blinded: list[Annotated[str, _BLIND_B64]] = Field(
        min_length=1, max_length=32, description="blinded token inputs, base64"
    )


class BlindTokenKey(Strict):
    right: Literal["invoke", "shutdown"]
    token_key: str = Field(description="the right's RSA-2048 key, SubjectPublicKeyInfo DER, base64")
    key_id: str = Field(description="SHA-256 of token_key, hex: the same for every answer of this function")


class BlindTokenResponse(BlindTokenKey):
    blind_signatures: list[str] = Field(description="one per blinded input, in order, base64")


# --- the session WebSocket ----------------------------------------------------------
# Binary messages are stream bytes, in both directions. Text messages are JSON events:


class Invoked(Strict):
    """Server -> client, first message on ``/v1/functions/{id}/invoke``: the session started."""

    type: Literal["invoked"] = "invoked"
    session_id: str
    session_right: str = Field(description="the session's own capability, as in InvokeResponse")


class Attached(Strict):
    """Server -> client, first message: output resumes at byte ``offset`` of the stream."""

    type: Literal["attached"] = "attached"
    offset: int


class LogStream(StrEnum):
    STDOUT = "stdout"  # print(), sys.stdout
    STDERR = "stderr"  # sys.stderr, warnings, logging


class Log(Strict):
    """Server -> client: what the function printed, apart from its output stream.

    ``offset`` counts the session's log bytes (UTF-8) from its start, so a client that
    re-attaches asks for the logs after the last one it saw and gets each line once."""

    type: Literal["log"] = "log"
    stream: LogStream
    offset: int = Field(ge=0)
    text: str


class SessionLogs(Strict):
    """``GET /v1/sessions/{id}/logs``: what the box still holds of a session's logs."""

    session_id: str
    dropped: int = Field(description="log bytes no longer held: the oldest go first past the cap")
    total: int = Field(description="log bytes the function wrote")
    logs: list[Log]


class Ack(Strict):
    """Client -> server: every output byte before ``offset`` has been received."""

    type: Literal["ack"] = "ack"
    offset: int = Field(ge=0)


class InputEnd(Strict):
    """Client -> server: no more input (the function's ``api.recv()`` returns None)."""

    type: Literal["eof"] = "eof"


class Ended(Strict):
    """Server -> client, last message: the session ended, after all its output."""

    type: Literal["end"] = "end"
    state: SessionState
    cause: EndCause
    result: Any = None
    error: FunctionError | None = None
    reason: str = ""
    usage: ResourceUsage = Field(default_factory=ResourceUsage)
