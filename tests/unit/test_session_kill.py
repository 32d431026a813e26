"""Killing one session: DELETE /v1/sessions/{id} ends it alone; its function goes on."""

from __future__ import annotations

from localbox import LocalBox, bearer

SOURCE = """\
from bento.runtime import api


def forever():
    api.send("started\\n")
    while api.recv() is not None:
        pass


def quick():
    return 1
"""


async def test_a_session_is_killed_alone_and_its_output_stays(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    victim = await box.invoke(function, "forever")
    other = await box.invoke(function, "forever")
    await box.wait_state(function, victim, ended=False)
    await box.registry.sessions[victim].output.read(0)  # it has sent its first line

    killed = await box.http.delete(f"/v1/sessions/{victim}", headers=function.session_auth(victim))
    assert killed.status_code == 200, killed.text
    info = killed.json()
    assert (info["state"], info["cause"], info["reason"]) == ("killed", "shutdown", "killed by its client")
    assert info["ended_at"] is not None and info["bytes_out"] == len(b"started\n")

    assert (await box.session_info(function, other))["state"] == "running", "its neighbour goes on"
    assert (await box.session_info(function, victim))["state"] == "killed", "it is retained"
    done = await box.invoke(function, "quick")
    assert (await box.wait_state(function, done))["state"] == "completed", "the function still serves"

    again = await box.http.delete(f"/v1/sessions/{victim}", headers=function.session_auth(victim))
    assert again.status_code == 200 and again.json()["reason"] == "killed by its client"
    ended = await box.http.delete(f"/v1/sessions/{done}", headers=function.session_auth(done))
    assert ended.status_code == 200 and ended.json()["state"] == "completed", "an ended session stays"
    await box.http.delete(f"/v1/sessions/{other}", headers=function.shutdown_auth)  # the owner may


async def test_killing_needs_the_session_right_or_the_owner_s_token(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    stranger = await box.upload(SOURCE)
    session = await box.invoke(function, "forever")
    missing = await box.http.delete(f"/v1/sessions/{session}")
    assert missing.status_code == 401 and missing.json()["code"] == "missing-token"
    for token in (stranger.invocation_token, stranger.shutdown_token, function.invocation_token):
        wrong = await box.http.delete(f"/v1/sessions/{session}", headers=bearer(token))
        assert wrong.status_code == 403 and wrong.json()["code"] == "wrong-token"
    unknown = await box.http.delete("/v1/sessions/nope", headers=function.invoke_auth)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown-session"
    assert (await box.session_info(function, session))["state"] == "running"
    by_owner = await box.http.delete(f"/v1/sessions/{session}", headers=function.shutdown_auth)
    assert by_owner.status_code == 200 and by_owner.json()["state"] == "killed"
