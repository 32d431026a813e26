"""Narrowed invocation tokens, in process: a real box checks every caveat before anything starts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import biscuit_auth
import pytest
from localbox import LocalBox, Uploaded, bearer

from bento.cli.main import main
from bento.client.capability import Capability
from bento.client.narrowing import narrow
from bento.errors import NarrowingRefused, UnreadableToken
from bento.protocol import attenuation
from bento.sandbox.host import SandboxUnavailable

SOURCE = """
from bento.runtime import api

def greet(name):
    api.send(f"hello {name}")
    return {"greeted": name}

def other(name):
    return {"other": name}
"""
HOUR = timedelta(hours=1)


def _later(delta: timedelta = HOUR) -> datetime:
    return datetime.now(UTC) + delta


async def _invoke(
    box: LocalBox,
    function: Uploaded,
    token: str,
    entry: str = "greet",
    args: list[Any] | None = None,
    **kw: Any,
) -> tuple[int, dict[str, Any]]:
    response = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": entry, "args": ["you"] if args is None else args, "kwargs": kw},
        headers=bearer(token),
    )
    return response.status_code, response.json()


def _append(token: str, source: str) -> str:
    """``token`` with a block written by hand, as anyone holding it could append."""
    chain = attenuation.parse(token).append(biscuit_auth.BlockBuilder(source))
    return attenuation.encode(attenuation.read(token)[0], chain)


async def test_a_narrowed_token_invokes_within_its_caveats_and_reaches_its_session(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    ticket = narrow(function.invocation_token, entries=["greet"], uses=2, until=_later(), args=["you"])
    status, body = await _invoke(box, function, ticket)
    assert status == 201, body
    info = await box.http.get(f"/v1/sessions/{body['session_id']}", headers=bearer(body["session_right"]))
    assert info.status_code == 200
    # Its listing shows the session it opened (it names its right), and nothing else.
    owner_session = await box.invoke(function, "greet", "owner")
    listing = await box.http.get(
        f"/v1/functions/{function.function_id}/sessions",
        headers={**bearer(ticket), "Bento-Session-Rights": body["session_right"]},
    )
    assert [s["session_id"] for s in listing.json()["sessions"]] == [body["session_id"]]
    assert owner_session not in listing.text


def _cases() -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """Name -> (narrowing, invocation, what the refusal says)."""
    return {
        "other entry": ({"entries": ["greet"]}, {"entry": "other"}, "entry point"),
        "expired": ({"until": _later(-timedelta(seconds=1))}, {}, "expired"),
        "other argument": ({"args": ["you"]}, {"args": ["them"]}, "other arguments"),
        "more arguments": ({"args": ["you"]}, {"args": ["you", "too"]}, "other arguments"),
        "a keyword": ({"args": ["you"]}, {"loud": True}, "other arguments"),
    }


@pytest.mark.parametrize("case", list(_cases()))
async def test_a_narrowed_token_is_refused_beyond_each_caveat(box: LocalBox, case: str) -> None:
    caveats, invocation, said = _cases()[case]
    function = await box.upload(SOURCE)
    ticket = narrow(function.invocation_token, **caveats)
    status, body = await _invoke(box, function, ticket, **invocation)
    assert (status, body["code"]) == (403, "caveat-refused"), body
    assert said in body["error"] and "never be widened" in body["fix"]
    assert ticket not in json.dumps(body) and ticket[-40:] not in json.dumps(body)
    assert not box.registry.sessions  # nothing started


async def test_uses_are_counted_across_every_token_narrowed_from_it(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    once = narrow(function.invocation_token, uses=1)
    assert (await _invoke(box, function, once))[0] == 201
    status, body = await _invoke(box, function, once)
    assert (status, body["code"]) == (403, "caveat-refused") and "uses are spent" in body["error"]
    # Narrowing it again with more uses starts no new count: the block that said 1 still does.
    again = narrow(once, uses=5, entries=["greet"])
    status, body = await _invoke(box, function, again)
    assert (status, body["code"]) == (403, "caveat-refused") and "uses are spent" in body["error"]
    # The owner's token is not counted at all.
    assert (await _invoke(box, function, function.invocation_token))[0] == 201


async def test_an_appended_wider_block_still_fails_the_narrower_check(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    ticket = narrow(function.invocation_token, entries=["greet"], until=_later())
    # Facts a block adds count for its own checks only; a wider check adds nothing.
    widened = _append(ticket, f'entry("other"); time({_later(100 * HOUR).isoformat()}); check if true;')
    status, body = await _invoke(box, function, widened, entry="other")
    assert (status, body["code"]) == (403, "caveat-refused"), body
    assert (await _invoke(box, function, widened))[0] == 201  # within the narrow block, it still works


async def test_a_caveat_the_box_does_not_understand_fails_closed(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    ticket = _append(function.invocation_token, 'check if weather("sunny");')
    status, body = await _invoke(box, function, ticket)
    assert (status, body["code"]) == (403, "caveat-refused")
    assert "does not understand" in body["error"]


async def test_a_forged_or_altered_token_is_refused(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    other = biscuit_auth.KeyPair()  # a forger's root, claiming the function
    claimed = biscuit_auth.BiscuitBuilder("function({id})", {"id": function.function_id}).build(
        other.private_key
    )
    forged = attenuation.encode(attenuation.read(function.invocation_token)[0], claimed)
    ticket = narrow(function.invocation_token, entries=["greet"])
    key, _, body = ticket.removeprefix(attenuation.PREFIX).partition(".")
    altered = f"{attenuation.PREFIX}{key}.{body[:-8]}{'A' * 8 if body[-8:] != 'A' * 8 else 'B' * 8}"
    stranger = await box.upload(SOURCE, name="stranger")
    for token, target in ((forged, function), (altered, function), (ticket, stranger)):
        status, answer = await _invoke(box, target, token)
        assert (status, answer["code"]) == (403, "wrong-token"), answer
        assert token not in json.dumps(answer)
    assert not box.registry.sessions


async def test_a_narrowed_token_never_shuts_down_nor_issues_nor_reaches_others(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    ticket = narrow(function.invocation_token, entries=["greet"])
    owner_session = await box.invoke(function, "greet", "owner")
    shutdown = await box.http.delete(f"/v1/functions/{function.function_id}", headers=bearer(ticket))
    assert (shutdown.status_code, shutdown.json()["code"]) == (403, "wrong-token")
    issued = await box.http.get(
        f"/v1/functions/{function.function_id}/blind-tokens/invoke", headers=bearer(ticket)
    )
    assert (issued.status_code, issued.json()["code"]) == (403, "wrong-token")
    for path in ("", "/logs"):
        reached = await box.http.get(f"/v1/sessions/{owner_session}{path}", headers=bearer(ticket))
        assert reached.status_code == 403
    listing = await box.http.get(f"/v1/functions/{function.function_id}/sessions", headers=bearer(ticket))
    assert listing.status_code == 200 and listing.json()["sessions"] == []
    assert function.function_id in box.registry.functions


async def test_concurrent_invocations_of_a_one_use_token_start_exactly_one(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"instances": 8})
    once = narrow(function.invocation_token, uses=1)
    answers = await asyncio.gather(*(_invoke(box, function, once) for _ in range(8)))
    assert sorted(status for status, _ in answers) == [201] + [403] * 7, answers
    assert all(body["code"] == "caveat-refused" for status, body in answers if status == 403)
    assert len(box.registry.sessions) == 1


def test_only_a_narrowable_token_narrows_and_each_caveat_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnreadableToken, match="not a narrowable"):
        narrow("t" * 43, uses=1)  # a plain token (a shutdown token, or a box from before)
    with pytest.raises(UnreadableToken, match="not a narrowable"):
        narrow("pt2." + "A" * 400, uses=1)  # a blinded one
    from bento.server.attenuation import Narrowing

    _, root = Narrowing.mint("fn")
    altered = root[:-8] + ("A" if root[-8] != "A" else "B") + root[-7:]
    with pytest.raises(UnreadableToken, match="signatures do not hold") as unreadable:
        narrow(altered, uses=1)
    assert unreadable.value.fix and "invocation token" in unreadable.value.fix
    for bad in ({"uses": 0}, {"until": datetime(2030, 1, 1)}, {"entries": []}, {}, {"args": [object()]}):
        with pytest.raises(NarrowingRefused, match="cannot narrow") as refused:
            narrow(root, **bad)  # type: ignore[arg-type]
        assert not isinstance(refused.value, UnreadableToken)
    reads = []  # the token is read once: its key and its blocks together
    real_split = attenuation.split
    monkeypatch.setattr(attenuation, "split", lambda wire: reads.append(wire) or real_split(wire))
    narrow(root, uses=1)
    assert reads == [root]


def test_bento_tokens_narrow_prints_a_capability_of_the_narrowed_token_only(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from bento.server.attenuation import Narrowing

    _, root = Narrowing.mint("fn1")
    record = {"function_id": "fn1", "name": "hello", "onion": "b" * 56, "relay_fingerprint": "",
              "relay_nickname": "exit0", "invocation_token": root, "shutdown_token": "s" * 43,
              "boot_id": "", "entry_points": ["get"], "deployed_at": 0.0}  # fmt: skip
    keyring = tmp_path / "keyring.json"
    keyring.write_text(json.dumps({"functions": {"fn1": record}}))
    argv = ["tokens", "narrow", "hello", "--entry", "get", "--uses", "1", "--until", "2h", "--arg", '"d1"']
    assert main([*argv, "--keyring", str(keyring), "--json"]) == 0
    capability = Capability.parse(json.loads(capsys.readouterr().out)["capability"])
    assert (capability.right, capability.function_id, capability.onion) == ("invoke", "fn1", "b" * 56)
    assert capability.token != root and "s" * 43 not in capability.encode()
    caveats = attenuation.parse(capability.token).block_source(1)
    assert '{"get"}.contains' in caveats and "$n <= 1" in caveats and 'arg(0, ""d1"")' in caveats


async def test_a_use_is_spent_only_when_its_session_really_starts(
    box: LocalBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = await box.upload(SOURCE)
    once = narrow(function.invocation_token, uses=1)
    assert (await _invoke(box, function, once, entry="missing"))[1]["code"] == "unknown-entry"

    async def failing(*args: object, **kwargs: object) -> NoReturn:
        raise SandboxUnavailable("no sandbox just now")

    with monkeypatch.context() as patched:
        patched.setattr(box.registry.sandbox, "acquire", failing)
        status, failed = await _invoke(box, function, once)
        assert status == 201, failed
        await asyncio.wait_for(box.registry.sessions[failed["session_id"]].done.wait(), 15)
    assert "sandbox could not start" in box.registry.sessions[failed["session_id"]].info().reason
    status, opened = await _invoke(box, function, once)  # the use the failed start held is back
    assert status == 201, opened
    assert (await _invoke(box, function, once))[1]["code"] == "caveat-refused"
