"""The server's end of an instance channel, as asyncio streams that lose no frame.

An instance that exits with input still unread in its socket (a function that took the
one line it wanted while the client also closed its input) makes the kernel report
``ECONNRESET`` to us instead of an end of stream (AF_UNIX does this when a socket closes
with data queued). asyncio's :class:`~asyncio.StreamReader` then raises that error on the
next read, before the bytes it already holds: the function's last output and its RESULT
frame were lost, and the session ended "before returning" (seen in 2 CI runs of 5). Here a
reset ends the stream like an EOF, after everything that arrived before it.

    >>> import socket
    >>> async def demo():
    ...     ours, theirs = socket.socketpair()
    ...     reader, writer = await open_channel(ours)
    ...     writer.write(b"input it never reads")
    ...     await writer.drain()
    ...     theirs.sendall(b"its answer")
    ...     theirs.close()
    ...     answer = await reader.read()
    ...     writer.close()
    ...     return answer
    >>> asyncio.run(demo())
    b'its answer'
"""

from __future__ import annotations

import asyncio
import socket


class _ChannelReader(asyncio.StreamReader):
    def set_exception(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionResetError):
            self.feed_eof()  # the instance is gone; what it sent before is still to be read
        else:
            super().set_exception(exc)


async def open_channel(
    sock: socket.socket, limit: int = 2 << 20
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over the connected socket ``sock`` (like ``asyncio.open_connection(sock=...)``)."""
    loop = asyncio.get_running_loop()
    reader = _ChannelReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
