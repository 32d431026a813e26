"""Property: whatever a client sends, the box answers 2xx or a 4xx ErrorBody, never 5xx, and keeps working."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from localbox import LocalBox, Uploaded

from bento.protocol.messages import ErrorBody
from properties import examples

T = TypeVar("T")
FUNCTION = "def main(*args, **kwargs):\n    return [len(args), sorted(kwargs)]\n"

# --- what a hostile or broken client may send -----------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63, -(2**63) - 1, 10**300, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_needs = st.fixed_dictionaries(
    {},
    optional={
        "memory_mb": st.one_of(st.integers(-5, 10**6), _scalars),
        "wall_seconds": st.one_of(st.integers(0, 10**7), _scalars),
        "instances": st.integers(-1, 100),
        "network": _scalars,
        "syscall_profiles": st.one_of(
            st.lists(st.sampled_from(["compute", "network", "processes", "x"])), _json
        ),
        "unknown": _json,
    },
)
_manifests = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["echo", "a" * 64]), st.text(max_size=80), _scalars)},
        optional={
            "module": st.one_of(
                st.sampled_from(["main", "pkg.mod", "1bad", "a..b"]), st.text(max_size=20), _scalars
            ),
            "description": st.one_of(st.text(max_size=50), _json),
            "needs": st.one_of(_needs, _json),
        },
    ),
)
_code = st.one_of(
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=40),
    st.text(max_size=40),
    _scalars,
)
_uploads = st.fixed_dictionaries(
    {"manifest": _manifests, "code": _code},
    optional={"kind": st.one_of(st.sampled_from(["module", "tar.gz", "zip", "MODULE"]), _scalars)},
)
_invocations = st.fixed_dictionaries(
    {
        "entry": st.one_of(
            st.sampled_from(["main", "_main", "1x", "", "a" * 101]), st.text(max_size=12), _json
        )
    },
    optional={"args": _json, "kwargs": _json, "extra": _json},
)
_raw_json_text = st.sampled_from(
    [
        "",
        "{",
        "[" * 300 + "]" * 300,
        '{"entry": "main", "args": [' + "9" * 5000 + "]}",
        '{"entry": "main", "args": [1e999]}',
        '{"entry": "main\\ud800"}',
        '{"manifest": {"name": "x"}, "code": "", "code": ""}',
        "NaN",
        "\ufeff{}",
    ]
)


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


_bodies = st.one_of(
    _uploads.map(_encode),
    _invocations.map(_encode),
    _json.map(_encode),
    _raw_json_text.map(str.encode),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "get"])
_segments = st.one_of(
    st.sampled_from(["v1", "functions", "sessions", "stream", "descriptor", "openapi.json", "..", ".", ""]),
    st.text(max_size=12),
)
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)


_ENDPOINTS = [
    ("POST", "/v1/functions"),
    ("DELETE", "/v1/functions/{id}"),
    ("POST", "/v1/functions/{id}/sessions"),
    ("GET", "/v1/functions/{id}/sessions"),
    ("GET", "/v1/sessions/{id}"),
    ("GET", "/v1/sessions/{id}/stream"),  # a WebSocket route, asked over plain HTTP
    ("GET", "/v1/descriptor"),
    ("GET", "/v1/openapi.json"),
]


@st.composite
def _requests(draw: st.DrawFn, function: Uploaded) -> dict[str, Any]:
    """Mostly real endpoints with the right method, so that requests get past routing."""
    method, template = draw(st.sampled_from(_ENDPOINTS))
    if draw(st.integers(0, 4)) == 0:
        method = draw(_methods)
    target = draw(
        st.sampled_from([function.function_id, function.function_id, "no-such-session"])
        | st.text(max_size=24)
    )
    path = template.replace("{id}", quote(target, safe="", errors="surrogatepass"))
    if draw(st.integers(0, 9)) == 0:
        segments = [quote(s, safe="", errors="surrogatepass") for s in draw(st.lists(_segments, max_size=5))]
        path = "/" + "/".join(segments).lstrip("/")  # a client cannot even send "//host-like" paths
    auth = draw(
        st.sampled_from(
            [
                None,
                f"Bearer {function.invocation_token}",
                f"Bearer {function.invocation_token}",
                f"Bearer {function.shutdown_token}",
                "Bearer",
                "Basic dXNlcjpwYXNz",
            ]
        )
        | _header_text
        | _header_text.map(lambda t: "Bearer " + t)
    )
    headers: dict[str, bytes] = {}
    if auth is not None:
        headers["authorization"] = auth.encode("latin-1")
    if draw(st.booleans()):
        headers["content-type"] = draw(_header_text).encode("latin-1")
    return {"method": method, "path": path, "headers": headers, "body": draw(_bodies)}


def _check(response: Any, request: dict[str, Any]) -> None:
    status = response.status_code
    assert status < 500, f"{status} for {request}: {response.text[:500]}"
    if status >= 400 and request["method"].upper() != "HEAD":
        body = ErrorBody.model_validate_json(response.content)
        assert body.code and body.error
        assert response.headers["content-type"] == "application/json"


async def _run_in_thread(examples: Callable[[], None]) -> None:
    """Run a Hypothesis test (synchronous) in a worker thread; its examples use ``on_loop``.

    Hypothesis does not drive coroutines itself, and the box lives on this event loop.
    """
    await asyncio.to_thread(examples)


def _on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)


async def _still_works(box: LocalBox) -> None:
    function = await box.upload(FUNCTION, name="after-the-storm")
    session_id = await box.invoke(function, "main", 1, [2], key={"k": None})
    info = await box.wait_state(function, session_id)
    assert info["state"] == "completed"
    assert box.registry.sessions[session_id].result == [2, ["key"]]


@pytest.mark.timeout(120)
async def test_malformed_requests_get_4xx_error_bodies_and_the_box_survives(box: LocalBox) -> None:
    current = [await box.upload(FUNCTION)]
    loop = asyncio.get_running_loop()
    seen: dict[int, int] = {}

    @settings(
        max_examples=examples(200),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        request = data.draw(_requests(current[0]))
        response = _on_loop(
            loop,
            box.http.request(
                request["method"], request["path"], headers=request["headers"], content=request["body"]
            ),
        )
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        _check(response, request)
        if request["method"] == "DELETE" and response.status_code == 200:
            current[0] = _on_loop(loop, box.upload(FUNCTION))  # it was shut down: carry on with another

    await _run_in_thread(fuzz)
    assert any(400 <= status < 500 for status in seen), seen
    await box.registry.stop_sessions()  # sessions the fuzzing started, if any
    await _still_works(box)


_UPLOADS_AND_INVOCATIONS = st.one_of(
    _uploads.map(lambda b: ("upload", b)), _invocations.map(lambda b: ("invoke", b))
)


@pytest.mark.timeout(120)
async def test_structured_nonsense_is_refused_with_a_reason(box: LocalBox) -> None:
    """Well-formed JSON of the wrong shape, sent to the right place with the right token."""
    function = await box.upload(FUNCTION)
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=examples(200),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=_UPLOADS_AND_INVOCATIONS)
    def fuzz(case: tuple[str, dict[str, Any]]) -> None:
        kind, body = case
        content = _encode(body)
        if kind == "upload":
            request = {"method": "POST", "path": "/v1/functions", "headers": {}, "body": content}
            response = _on_loop(loop, box.http.post("/v1/functions", content=content))
        else:
            request = {"method": "POST", "path": "sessions", "headers": {}, "body": content}
            response = _on_loop(
                loop,
                box.http.post(
                    f"/v1/functions/{function.function_id}/sessions",
                    content=content,
                    headers=function.invoke_auth,
                ),
            )
        _check(response, request)
        if response.status_code == 422:
            assert response.json()["code"] in {"invalid-request", "bad-code"}

    await _run_in_thread(fuzz)
    await box.registry.stop_sessions()
    await _still_works(box)
