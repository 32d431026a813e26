"""Echo: the smallest interactive function. It greets, then shouts back what it reads.

    bento deploy examples/echo --box BOX --manifest examples/echo/manifest.toml
    bento invoke echo hello '"Tor"'
    printf 'one\ntwo\n' | bento invoke echo shout
"""

from bento.runtime import api


def hello(name="world"):
    """Send one line; the return value ends the session as its JSON result."""
    api.send(f"hello {name}\n")
    return {"greeted": name}


def shout():
    """Stream: every chunk the client sends comes back upper-cased, until the client closes."""
    lines = 0
    while (data := api.recv()) is not None:  # None: the client closed its input
        api.send(data.upper())
        lines += data.count(b"\n")
    return {"lines": lines}
