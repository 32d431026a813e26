"""A session belongs to whoever opened it: the invocation token alone reaches no session (issue 19).

Before, anyone holding a function's invocation token (a Dropbox capability carries it)
could list its sessions, attach to any of them and read what another user's session sent.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from localbox import LocalBox, Uploaded, bearer

from bento.client import session_rights
from bento.client.capability import Capability
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.server import tokens

SOURCE = """
from bento.runtime import api

def secret(text):
    api.send(text)
    while api.recv() is not None:
        pass
"""


def _stranger(function: Uploaded) -> Deployment:
    """What someone handed only the invocation token has: a capability's deployment."""
    return Capability("invoke", function.onion, function.function_id, function.invocation_token).deployment()


async def _first_output(box: LocalBox, deployment: Deployment, session_id: str) -> bytes:
    stream = await box.client.attach(deployment, session_id)
    async with stream:
        return await asyncio.wait_for(anext(aiter(stream)), 20)


async def test_the_invocation_token_alone_cannot_hijack_a_session(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    victim = await box.invoke(function, "secret", "the deposit's bytes")
    assert await _first_output(box, function, victim) == b"the deposit's bytes"

    stranger = _stranger(function)
    assert (await box.client.sessions(stranger)).sessions == [], "it sees no one else's session"
    with pytest.raises(BentoError, match="not the right of session") as refused:
        await _first_output(box, stranger, victim)
    assert refused.value.code == "wrong-token"
    for method, path in (("GET", "/logs"), ("GET", ""), ("DELETE", "")):
        response = await box.http.request(
            method, f"/v1/sessions/{victim}{path}", headers=bearer(function.invocation_token)
        )
        assert (response.status_code, response.json()["code"]) == (403, "wrong-token"), (method, path)
    assert box.registry.sessions[victim].attachment is None, "the victim's session was never attached"
    assert not box.registry.sessions[victim].ended

    # The stranger's own sessions are theirs: it invokes, reads, lists and kills them.
    own = await box.invoke(stranger, "secret", "mine")
    assert await _first_output(box, stranger, own) == b"mine"
    assert [s.session_id for s in (await box.client.sessions(stranger)).sessions] == [own]
    assert (await box.client.kill(stranger, own)).state == "killed"
    # The owner lists both and may stop the victim's, but reads neither.
    assert {s.session_id for s in (await box.client.sessions(function)).sessions} == {victim, own}
    owner = dataclasses.replace(function, session_rights={})
    with pytest.raises(BentoError, match="not the right of session"):
        await box.client.logs(owner, victim)
    assert (await box.client.kill(owner, victim)).state == "killed"


async def test_a_session_right_is_fresh_per_session_and_kept_only_as_a_digest(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    first, second = await box.invoke(function, "secret", "a"), await box.invoke(function, "secret", "b")
    rights = [function.session_rights[first], function.session_rights[second]]
    assert rights[0] != rights[1] and len(rights[0]) == 43  # 256 random bits each
    held = repr(vars(box.registry.sessions[first]))
    assert rights[0] not in held
    assert box.registry.sessions[first].right_digest == tokens.digest(rights[0])
    assert rights[0] not in repr(function), "a deployment's repr shows no secret"
    crossed = await box.http.get(f"/v1/sessions/{second}", headers=bearer(rights[0]))
    assert crossed.status_code == 403
    for session_id in (first, second):
        await box.client.kill(function, session_id)


async def test_a_listing_names_at_most_64_rights(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    many = ",".join(tokens.new_token() for _ in range(65))
    response = await box.http.get(
        f"/v1/functions/{function.function_id}/sessions",
        headers={**function.invoke_auth, session_rights.HEADER: many},
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid-request")


async def test_the_keyring_keeps_the_right_for_attaching_from_another_process(
    box: LocalBox, tmp_path
) -> None:
    function = await box.upload(SOURCE)
    keyring = Keyring(tmp_path / "keyring.json")
    keyring.add(Deployment(**{f.name: getattr(function, f.name) for f in dataclasses.fields(Deployment)}))
    session_id = await box.invoke(function, "secret", "later")
    keyring.add_session(session_id, function.function_id, function.session_rights[session_id])

    reloaded = Keyring(tmp_path / "keyring.json").function_of_session(session_id)
    assert reloaded.session_rights == {session_id: function.session_rights[session_id]}
    assert (tmp_path / "keyring.json").stat().st_mode & 0o077 == 0
    assert await _first_output(box, reloaded, session_id) == b"later"
    await box.client.kill(reloaded, session_id)
