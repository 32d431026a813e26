"""docs/api.md and docs/openapi.json stay true to the code."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from localbox import LocalBox

from bento.protocol import code_archive, frames
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import EndCause, SessionState
from bento.protocol.openapi import openapi_document
from bento.protocol.policy import NodePolicy
from bento.server import api, buffer, code, daemon, registry, tokens
from bento.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REGENERATE = (
    ".venv/bin/python -c 'import json; from bento.protocol.openapi import openapi_document as d; "
    "print(json.dumps(d(), indent=2, sort_keys=True))' > docs/openapi.json"
)


def _error_codes() -> dict[str, int]:
    """Every ErrorBody code the server can answer, with its status: the protocol's one table."""
    return {code.value: code.status for code in ErrorCode if code is not ErrorCode.HTTP_ERROR}


def test_the_server_answers_only_codes_of_the_table() -> None:
    for module in (api, registry):
        source = Path(module.__file__ or "").read_text()
        assert not re.findall(r"BoxError\(\s*\d", source), "a status belongs in bento.protocol.errors"
        for name in re.findall(r"ErrorCode\.([A-Z_]+)", source):
            assert name in ErrorCode.__members__


def test_openapi_json_is_up_to_date() -> None:
    expected = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    current = (DOCS / "openapi.json").read_text()
    assert current == expected, f"docs/openapi.json is out of date; regenerate it with:\n  {REGENERATE}"


def test_api_md_tells_how_to_regenerate_openapi_json() -> None:
    assert REGENERATE in (DOCS / "api.md").read_text()


def test_every_error_code_is_documented_with_its_status() -> None:
    text = (DOCS / "api.md").read_text()
    codes = _error_codes()
    assert len(codes) >= 12, codes  # the regular expression still finds them
    for name, status in codes.items():
        assert re.search(rf"^\| {status} \| `{name}` \|", text, re.MULTILINE), (
            f"{status} {name} is not in the table"
        )


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n >> 10} KiB"


def test_the_numbers_in_api_md_are_the_code_s() -> None:
    text = " ".join((DOCS / "api.md").read_text().split())  # line breaks do not matter
    defaults = ServerConfig()
    reaper = inspect.signature(registry.Registry.reap_forever).parameters["interval"].default
    daemon_source = Path(daemon.__file__ or "").read_text()
    ws_limit = re.search(r"ws_max_size=(\d+) << (\d+)", daemon_source)
    assert ws_limit is not None
    facts = [
        f"{_size(api.JSON_LIMIT)} for everything but an upload",
        f"`max_upload_bytes * 4/3 + {_size(api.JSON_LIMIT)}`",
        f"`max_upload_bytes` ({_size(NodePolicy().max_upload_bytes)} by default)",
        f"at most {code.MAX_FILES} entries",
        f"at most {code.EXPANSION} times `max_upload_bytes`",
        f"names over {code_archive.MAX_NAME_BYTES} bytes ({code_archive.MAX_PART_BYTES} a part) or "
        f"{code_archive.MAX_DEPTH} directories deep",
        f"inflate at most {code_archive.MAX_RATIO}-fold past its first {_size(code_archive.RATIO_FLOOR)}",
        f"(at most {_size(frames.MAX_PAYLOAD)} each)",
        f"binary messages of at most {_size(buffer.READ_CHUNK)}",
        f"messages of up to {_size(int(ws_limit[1]) << int(ws_limit[2]))}",
        f"`session_buffer_bytes` ({_size(defaults.session_buffer_bytes)} by default",
        f"({defaults.session_retention_seconds:g} s by default; the box checks every {reaper:g} s)",
        f"{len(tokens.new_token())} characters of URL-safe base64",
        f"{len(tokens.new_id())} characters of lower-case hex",
    ]
    for fact in facts:
        assert fact in text, f"docs/api.md should say: {fact}"


def test_every_session_state_and_end_cause_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    for value in [*SessionState, *EndCause]:
        assert f"`{value.value}`" in text, value


async def test_every_route_is_documented_and_every_documented_route_exists(box: LocalBox) -> None:
    text = (DOCS / "api.md").read_text()
    app = box.http._transport.app  # type: ignore[attr-defined]
    served = set()
    for route in app.routes:
        for method in getattr(route, "methods", None) or {"GET"}:
            if method != "HEAD":
                served.add((method, route.path))
    for method, path in served:
        assert f"{method} {path}" in text, f"{method} {path} is not in docs/api.md"

    documented = {
        (method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert documented <= served
    for method, path in documented:
        concrete = path.replace("{function_id}", "some-id").replace("{session_id}", "some-id")
        response = await box.http.request(method, concrete)
        assert response.status_code not in (404, 405) or response.json()["code"] not in (
            "no-such-endpoint",
            "method-not-allowed",
        ), (method, path)


# What each route can answer, from reading api.py and registry.py.
STATUSES = {
    # 503: the operator paused uploads; 401-410: the function it replaces (UploadRequest.replaces)
    ("post", "/v1/functions"): {201, 401, 403, 404, 409, 410, 413, 422, 503},
    ("delete", "/v1/functions/{function_id}"): {200, 401, 403, 404, 410},  # 410: the operator evicted it
    ("post", "/v1/functions/{function_id}/sessions"): {201, 401, 403, 404, 410, 413, 422, 503},
    ("get", "/v1/functions/{function_id}/sessions"): {200, 401, 403, 404, 410},
    ("get", "/v1/sessions/{session_id}"): {200, 401, 403, 404, 410},
}


def test_openapi_lists_every_status_a_route_can_answer() -> None:
    paths = openapi_document()["paths"]
    for (method, path), statuses in STATUSES.items():
        listed = {int(s) for s in paths[path][method]["responses"]}
        assert listed == statuses, (
            f"{method.upper()} {path}: documents {sorted(listed)}, answers {sorted(statuses)}"
        )
