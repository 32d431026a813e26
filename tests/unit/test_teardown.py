"""Teardown that meets a closed peer goes on quietly; one that meets a bug says so (at debug,
with no secret), and still finishes; cancellation is never swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bento.errors import teardown
from bento.protocol.cover import CoverRequest
from bento.server.cover import CoveredSocket

SECRET = "tok_0123456789abcdef"  # an exception's message may quote one: it must not reach the log


class _Gone:
    """A Starlette WebSocket whose close raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("nothing is sent")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        raise self.error


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="bento")
    return caplog


@pytest.mark.parametrize(
    "error", [RuntimeError("Cannot call send once a close message has been sent"), ConnectionResetError()]
)
async def test_closing_a_stream_whose_client_went_is_quiet(
    debug: pytest.LogCaptureFixture, error: Exception
) -> None:
    await CoveredSocket(_Gone(error), CoverRequest(rate=10)).close(1000, "done")  # type: ignore[arg-type]
    assert debug.records == []


async def test_a_bug_in_closing_a_stream_is_logged_without_its_message(
    debug: pytest.LogCaptureFixture,
) -> None:
    await CoveredSocket(_Gone(KeyError(SECRET)), CoverRequest(rate=10)).close(1000, "done")  # type: ignore[arg-type]
    [record] = debug.records
    said = record.getMessage()
    assert record.levelno == logging.DEBUG
    assert said.startswith("closing a covered stream failed unexpectedly: KeyError at ")
    assert f"{__file__}:" in said  # the line that raised
    assert SECRET not in said


def test_the_expected_are_quiet_and_cancellation_goes_through(debug: pytest.LogCaptureFixture) -> None:
    with teardown("closing", OSError):
        raise BrokenPipeError(SECRET)
    assert debug.records == []
    with pytest.raises(asyncio.CancelledError), teardown("closing", OSError):
        raise asyncio.CancelledError
    assert debug.records == []
