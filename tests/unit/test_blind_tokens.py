"""Blinded tokens end to end in process: issue, spend once, reach only one's own session."""

from __future__ import annotations

import asyncio
import base64

import pytest
from localbox import LocalBox, Uploaded, bearer

from bento.client import blind_tokens
from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.errors import BentoError
from bento.protocol import private_token

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
    info = await box.http.get(f"/v1/sessions/{session_id}", headers=bearer(token))
    assert info.status_code == 200

    status, body = await _invoke(box, function.function_id, token)
    assert (status, body["code"]) == (403, "wrong-token")
    assert "used already" in body["error"]
    assert "good for one use" in body["fix"] and "bento tokens FUNCTION --right invoke" in body["fix"]


async def test_a_blinded_token_reaches_no_other_session(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    first, second = await blind_tokens.obtain(client, _deployment(function), "invoke", 2)
    _, opened = await _invoke(box, function.function_id, first)
    other = await box.http.get(f"/v1/sessions/{opened['session_id']}", headers=bearer(second))
    assert other.status_code == 403
    listing = await box.http.get(f"/v1/functions/{function.function_id}/sessions", headers=bearer(first))
    assert (listing.status_code, listing.json()["code"]) == (403, "single-use-token")


async def test_a_refused_invocation_does_not_spend_the_token(box: LocalBox, client: Box) -> None:
    function = await box.upload(SOURCE)
    [token] = await blind_tokens.obtain(client, _deployment(function), "invoke", 1)
    status, body = await _invoke(box, function.function_id, token, entry="missing")
    assert (status, body["code"]) == (404, "unknown-entry")
    status, _ = await _invoke(box, function.function_id, token)
    assert status == 201


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
