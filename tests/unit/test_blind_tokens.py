"""Blinded tokens end to end in process: issue, spend once, reach only one's own session."""

from __future__ import annotations

import asyncio
import base64
from typing import NoReturn

import pytest
from localbox import LocalBox, Uploaded, bearer

from bento.client import blind_tokens
from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.errors import BentoError
from bento.protocol import private_token
from bento.sandbox.host import SandboxUnavailable

SOURCE = """
from bento.runtime import api

def greet(name):
    api.send(f"hello {name}")
    return {"greeted": name}
"""


def _deployment(function: Uploaded) -> Deployment:
    return Deployment(
        function_id=function.function_id,
        name="test",
        onion="x" * 56,
        relay_fingerprint="A" * 40,
        relay_nickname="test",
        invocation_token=function.invocation_token,
        shutdown_token=function.shutdown_token,
        boot_id="boot-1",
        entry_points=function.entry_points,
        deployed_at=0.0,
    )


@pytest.fixture
def client(box: LocalBox) -> Box:
    return box.client  # the real client, against the app in process


async def _invoke(box: LocalBox, function_id: str, token: str, entry: str = "greet") -> tuple[int, dict]:
    response = await box.http.post(
        f"/v1/functions/{function_id}/sessions",
        json={"entry": entry, "args": ["you"]},
        headers=bearer(token),
    )
    return response.status_code, response.json()


async def test_a_blinded_token_invokes_once_and_reaches_its_session(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    deployment = _deployment(function)
    [token] = await blind_tokens.obtain(client, deployment, "invoke", 1)
    assert private_token.is_blinded(token)

    status, body = await _invoke(box, function.function_id, token)
    assert status == 201, body
    session_id = body["session_id"]
    info = await box.http.get(f"/v1/sessions/{session_id}", headers=bearer(body["session_right"]))
    assert info.status_code == 200
    spent = await box.http.get(f"/v1/sessions/{session_id}", headers=bearer(token))
    assert spent.status_code == 403  # the session is reached by its right, the token is spent

    status, body = await _invoke(box, function.function_id, token)
    assert (status, body["code"]) == (403, "wrong-token")
    assert "good once" in body["error"]  # used already, or held until its session has started
    assert "good for one use" in body["fix"] and "bento tokens FUNCTION --right invoke" in body["fix"]


async def test_a_blinded_token_reaches_no_other_session(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    first, second = await blind_tokens.obtain(client, _deployment(function), "invoke", 2)
    _, opened = await _invoke(box, function.function_id, first)
    other = await box.http.get(f"/v1/sessions/{opened['session_id']}", headers=bearer(second))
    assert other.status_code == 403
    _, own = await _invoke(box, function.function_id, second)
    crossed = await box.http.get(f"/v1/sessions/{opened['session_id']}", headers=bearer(own["session_right"]))
    assert crossed.status_code == 403
    listing = await box.http.get(f"/v1/functions/{function.function_id}/sessions", headers=bearer(first))
    assert (listing.status_code, listing.json()["code"]) == (403, "single-use-token")


async def test_a_refused_invocation_does_not_spend_the_token(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    status, body = await _invoke(box, function.function_id, token, entry="missing")
    assert (status, body["code"]) == (404, "unknown-entry")
    status, _ = await _invoke(box, function.function_id, token)
    assert status == 201


async def test_a_session_that_never_starts_leaves_its_token_good(
    box: LocalBox, client: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token is spent only when the session it pays for really starts (its instance exists)."""
    function = await box.upload(SOURCE)
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    real_acquire = box.registry.sandbox.acquire

    async def failing(*args: object, **kwargs: object) -> NoReturn:
        raise SandboxUnavailable("no sandbox just now")

    monkeypatch.setattr(box.registry.sandbox, "acquire", failing)
    status, failed = await _invoke(box, function.function_id, token)
    assert status == 201, failed
    info = await box.wait_state(_right_holder(function, failed), failed["session_id"])
    assert "sandbox could not start" in info["reason"]

    monkeypatch.setattr(box.registry.sandbox, "acquire", real_acquire)
    status, opened = await _invoke(box, function.function_id, token)
    assert status == 201, opened
    info = await box.wait_state(_right_holder(function, opened), opened["session_id"])
    assert info["state"] == "completed"
    status, again = await _invoke(box, function.function_id, token)
    assert (status, again["code"]) == (403, "wrong-token") and "used already" in again["error"]


@pytest.mark.parametrize("box_limits", [{"policy": {"storage": {"allowed": True, "max_mb": 2}}}])
async def test_resources_that_fail_to_open_leave_the_token_good(
    box: LocalBox, client: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: the token was spent before the session's resources opened; a failure burnt it."""
    function = await box.upload(SOURCE, needs={"storage_mb": 1})
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)

    def full(*args: object) -> NoReturn:
        raise OSError("no space left for the function's storage")

    with monkeypatch.context() as patched:
        patched.setattr(box.registry.store, "of", full)
        with pytest.raises(OSError, match="no space left"):  # the app's 500, raised in process
            await _invoke(box, function.function_id, token)
    assert not box.registry.sessions
    status, opened = await _invoke(box, function.function_id, token)
    assert status == 201, opened


async def test_one_token_sent_twice_at_once_opens_one_session(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE, needs={"instances": 4})
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    answers = await asyncio.gather(*(_invoke(box, function.function_id, token) for _ in range(4)))
    assert sorted(status for status, _ in answers) == [201, 403, 403, 403]


def _right_holder(function: Uploaded, opened: dict) -> Deployment:
    holder = _deployment(function)
    holder.session_rights[opened["session_id"]] = opened["session_right"]
    return holder


async def test_tokens_are_bound_to_their_function_and_right(box: LocalBox, client: Box) -> None:
    one, two = await box.upload(SOURCE), await box.upload(SOURCE)
    [invoke_one] = await blind_tokens.obtain(client, _deployment(one), "invoke", 1)
    await blind_tokens.obtain(client, _deployment(two), "invoke", 1)  # two has a key of its own
    status, body = await _invoke(box, two.function_id, invoke_one)
    assert status == 403 and "another key" in body["error"]
    refused = await box.http.delete(f"/v1/functions/{one.function_id}", headers=bearer(invoke_one))
    assert refused.status_code == 403


async def test_a_blinded_shutdown_token_shuts_down(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    [token] = await blind_tokens.obtain(client, _deployment(function), "shutdown", 1)
    response = await box.http.delete(f"/v1/functions/{function.function_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert function.function_id not in box.registry.functions


async def test_issuing_needs_the_plain_token_of_the_same_right(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    path = f"/v1/functions/{function.function_id}/blind-tokens/shutdown"
    assert (await box.http.get(path, headers=function.invoke_auth)).status_code == 403
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    invoke_path = f"/v1/functions/{function.function_id}/blind-tokens/invoke"
    assert (await box.http.get(invoke_path, headers=bearer(token))).status_code == 403


async def test_the_box_never_sees_what_it_signs(box: LocalBox, client: Box, monkeypatch) -> None:
    function = await box.upload(SOURCE)
    seen: list[bytes] = []
    issuer = box.registry.functions[function.function_id].issuer
    real_sign = issuer.sign

    async def spy(right, blinded):
        seen.extend(blinded)
        return await real_sign(right, blinded)

    monkeypatch.setattr(issuer, "sign", spy)
    tokens = await blind_tokens.obtain(client, _deployment(function), "invoke", 3)
    for wire in tokens:
        token = private_token.Token.parse(wire)
        assert all(token.nonce not in b and token.authenticator != b for b in seen)


async def test_a_box_that_changes_keys_is_refused(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    deployment = _deployment(function)
    await blind_tokens.obtain(client, deployment, "invoke", 1)
    deployment.token_keys["invoke"] = "00" * 32  # as if an earlier answer named another key
    with pytest.raises(BentoError, match="another key"):
        await blind_tokens.obtain(client, deployment, "invoke", 1)


async def test_malformed_requests_are_refused_clearly(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    path = f"/v1/functions/{function.function_id}/blind-tokens/invoke"
    short = base64.b64encode(b"\x01" * 10).decode()
    response = await box.http.post(
        path, json={"right": "invoke", "blinded": [short]}, headers=function.invoke_auth
    )
    assert response.status_code == 422
    too_many = [base64.b64encode(b"\x01" * 256).decode()] * 33
    response = await box.http.post(
        path, json={"right": "invoke", "blinded": too_many}, headers=function.invoke_auth
    )
    assert response.status_code == 422
    too_big = base64.b64encode(b"\xff" * 256).decode()
    response = await box.http.post(
        path, json={"right": "invoke", "blinded": [too_big]}, headers=function.invoke_auth
    )
    assert (response.status_code, response.json()["code"]) == (422, "bad-blinded-token")
    garbage = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "greet"},
        headers=bearer("pt2." + "A" * 400),
    )
    assert garbage.status_code == 403


async def test_the_client_hears_a_spent_token_at_once_over_the_one_round_trip_invoke(
    box: LocalBox, client: Box
) -> None:
    function = await box.upload(SOURCE)
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    holder = blind_tokens.with_token(_deployment(function), token)
    async with await client.start(holder, "greet", ["you"]) as stream:
        assert b"".join([chunk async for chunk in stream]) == b"hello you"
    with pytest.raises(BentoError, match="used already"):
        await asyncio.wait_for(client.start(holder, "greet", ["you"]), 20)
