"""Schemathesis, a maintained API fuzzer, against docs/openapi.json and the box it documents.

The box is the real app and registry (sessions run in real sandboxes), served by uvicorn on
loopback inside this test. Schemathesis runs every phase it has (examples, coverage,
fuzzing, and the stateful phase that follows the document's links: upload -> invoke ->
session -> shutdown) with every check it has, bounded in examples so that it takes
seconds, and must find nothing: no 5xx, no status, header or body the document does not
declare, no request the document calls invalid that the box accepts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from localbox import LocalBox
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"
FUNCTION = "def main(*args, **kwargs):\n    return [len(args), sorted(kwargs)]\n"


class Tokens:
    """The capabilities of every function uploaded so far (ours, and those Schemathesis uploads)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.functions: dict[str, tuple[str, str]] = {}  # function id -> (invocation, shutdown)
        self.lock = threading.Lock()

    def learn(self, body: bytes) -> None:
        try:
            uploaded = json.loads(body)
        except ValueError:
            return
        if isinstance(uploaded, dict) and {"function_id", "invocation_token", "shutdown_token"} <= set(
            uploaded
        ):
            with self.lock:
                self.functions[uploaded["function_id"]] = (
                    uploaded["invocation_token"],
                    uploaded["shutdown_token"],
                )

    def for_case(self, method: str, path_parameters: dict[str, Any]) -> str | None:
        function_id = path_parameters.get("function_id")
        if function_id is None and "session_id" in path_parameters:
            session = self.registry.sessions.get(path_parameters["session_id"])
            function_id = session.function_id if session is not None else None
        with self.lock:
            tokens = self.functions.get(str(function_id)) or next(iter(self.functions.values()), None)
        if tokens is None:
            return None
        return tokens[1] if method.upper() == "DELETE" else tokens[0]


def _fuzz(url: str, tokens: Tokens, phases: list[str]) -> list[str]:
    document = json.loads(DOCUMENT.read_text())
    config = SchemathesisConfig.from_dict(
        {
            "base-url": url,
            "seed": 1,
            "checks": {"enabled": True},
            "generation": {"max-examples": 8, "database": "none"},
            "phases": {"stateful": {"max-steps": 6}},
            "operations": [
                {
                    # A schema can say that the code is base64, not that it decodes to a Python
                    # module (or a .tar.gz holding one) named in the manifest: 422 bad-code is a
                    # valid answer to a schema-valid upload; so are 404 and 409 to one that
                    # replaces a function this box does not hold, or whose storage would not fit.
                    "include-operation-id": "upload",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [201, 403, 404, 409, 413, 422]}
                    },
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)

    @schema.auth()
    class Bearer:
        def get(self, case: Any, ctx: Any) -> str | None:
            return tokens.for_case(case.method, case.path_parameters or {})

        def set(self, case: Any, data: str | None, ctx: Any) -> None:
            if data is not None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    @schema.hook
    def after_call(ctx: Any, case: Any, response: Any) -> None:
        if case.method.upper() == "POST" and case.path == "/v1/functions":
            tokens.learn(response.content)

    failures: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            phases.append(f"{event.phase.name.value}: {event.status.value if event.status else None}")
        if isinstance(event, events.ScenarioFinished) and event.status.value in ("failure", "error"):
            for check in event.recorder.checks.values():
                for result in check:
                    if result.failure_info is not None:
                        info = result.failure_info
                        failures.append(f"{event.label}: {result.name}: {info.failure}\n{info.code_sample}")
        if isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"{type(event).__name__}: {event}")
    return failures


@pytest.mark.timeout(120)
async def test_schemathesis_finds_nothing(box: LocalBox) -> None:
    tokens = Tokens(box.registry)
    uploaded = await box.upload(FUNCTION)
    tokens.functions[uploaded.function_id] = (uploaded.invocation_token, uploaded.shutdown_token)
    listener = socket.create_server(("127.0.0.1", 0))  # listening at once: no wait for the server
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(box.http._transport.app, log_level="warning", lifespan="off"))  # type: ignore[attr-defined]
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        phases: list[str] = []
        failures = await asyncio.to_thread(_fuzz, f"http://127.0.0.1:{port}", tokens, phases)
    finally:
        server.should_exit = True
        await serving
        listener.close()
        await box.registry.stop_sessions()
    assert failures == [], "\n".join(failures)
    for phase in ("coverage", "fuzzing", "stateful"):
        assert f"{phase}: success" in phases, phases
    assert len(tokens.functions) > 1, "the stateful phase uploaded functions and followed their links"


async def test_a_wrong_method_is_405_with_allow(box: LocalBox) -> None:
    response = await box.http.put("/v1/functions/x/sessions")
    assert (response.status_code, response.json()["code"]) == (405, "method-not-allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
