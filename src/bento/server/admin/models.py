"""The admin socket's requests and answers, as strict models (the CLI reads them back too).

No model here carries a token, a token's digest or a storage key: what the operator sees
of a function is what it is and what it uses, never what would let them act as its user.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bento.protocol.messages import SessionState
from bento.server.admin.controls import Pausable


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionRow(Strict):
    function_id: str
    name: str
    created_at: float = Field(description="Unix time of the upload")
    entry_points: list[str]
    instances: int = Field(description="sessions running now")
    sessions: int = Field(description="sessions the box keeps (running and recently ended)")
    storage_bytes: int = Field(description="bytes of storage used (values and key names)")
    storage_quota_bytes: int


class FunctionList(Strict):
    functions: list[FunctionRow]


class SessionRow(Strict):
    session_id: str
    function_id: str
    function_name: str
    entry: str
    state: SessionState
    attached: bool
    started_at: float
    ended_at: float | None
    cpu_seconds: float
    peak_memory_bytes: int
    bytes_in: int
    bytes_out: int
    circuits: int = Field(description="Tor circuits it built")
    onion_services: int
    reason: str


class SessionList(Strict):
    sessions: list[SessionRow]


class Figures(Strict):
    """What a function, or the whole box, has used: counts since the server started."""

    instances: int = Field(description="sessions running now")
    sessions_total: int = Field(description="sessions started")
    cpu_seconds_total: float = Field(description="CPU time of sessions (running ones: as far as measured)")
    bytes_in_total: int = Field(description="bytes clients sent to functions")
    bytes_out_total: int = Field(description="bytes functions sent to clients")
    memory_bytes: int = Field(description="memory promised to running instances (their manifests)")
    storage_bytes: int


class FunctionUsage(Figures):
    function_id: str
    name: str
    refusals: dict[str, int] = Field(
        default_factory=dict, description="requests of its instances the broker refused, by reason"
    )


class BoxUsage(Strict):
    box: Figures
    functions: list[FunctionUsage]
    refusals: dict[str, int] = Field(
        description="requests refused since start, by error code (the broker's as broker-<reason>)"
    )
    paused: list[Pausable]
    memory_limit_bytes: int = Field(description="the policy's total_memory_mb")
    instances_limit: int = Field(description="the policy's instances_total")


class PauseRequest(Strict):
    what: list[Pausable] = Field(
        default=["uploads", "invocations"], min_length=1, max_length=2, description="what to pause or resume"
    )


class PauseState(Strict):
    paused: list[Pausable]


class Evicted(Strict):
    function_id: str
    name: str
    sessions_stopped: int
