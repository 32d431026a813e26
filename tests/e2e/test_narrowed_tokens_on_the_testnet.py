"""Narrowed tokens over Tor: the owner hands over a capability for one greeting, and no more."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from functions import HELLO
from support import TIMEOUT, deploy, run

from bento.client import Box
from bento.client.capability import Capability
from bento.client.narrowing import narrow
from bento.errors import Refused
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import SessionState

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


async def test_a_handed_over_narrowed_capability_is_refused_beyond_its_caveats(box: Box) -> None:
    owner = await deploy(box, HELLO, "narrowed")
    until = datetime.now(UTC) + timedelta(hours=1)
    ticket = narrow(owner.invocation_token, entries=["main"], uses=1, until=until, args=["holder"])
    handed = Capability("invoke", owner.onion, owner.function_id, ticket).encode()
    holder = Capability.parse(handed).deployment()  # all the holder has: no keyring, no owner's token
    assert owner.invocation_token not in handed and owner.shutdown_token not in handed

    with pytest.raises(Refused) as other_argument:  # refused before anything starts: no use spent
        await box.invoke(holder, "main", ["stranger"])
    assert other_argument.value.code is ErrorCode.CAVEAT_REFUSED
    output, ended = await run(box, holder, "main", "holder")
    assert (output, ended.state) == (b"hello holder\n", SessionState.COMPLETED)
    with pytest.raises(Refused) as spent:
        await box.invoke(holder, "main", ["holder"])
    assert spent.value.code is ErrorCode.CAVEAT_REFUSED and "uses are spent" in spent.value.message
    with pytest.raises(Refused) as stop:  # an invocation right, however narrowed, never shuts down
        await box.shutdown(dataclasses.replace(holder, shutdown_token=ticket))
    assert stop.value.code is ErrorCode.WRONG_TOKEN
    await box.shutdown(owner)
