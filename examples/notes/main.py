"""Notes: a small notebook kept on the box with api.storage.

The notes outlive the sessions that write them and are shared by every instance of the
function; the box keeps them encrypted under a key only its server's memory holds, and
destroys them when the function is shut down (or the box restarts).

    bento deploy examples/notes --box BOX --manifest examples/notes/manifest.toml
    bento invoke notes add '"buy onions"'
    bento invoke notes read
"""

from bento.runtime import api

PREFIX = "note/"


def add(text):
    """Store one note; returns its key. Over the quota, api.storage.StorageError says so."""
    existing = api.storage.keys(PREFIX)
    number = int(existing[-1][len(PREFIX) :]) + 1 if existing else 1
    key = f"{PREFIX}{number:06d}"
    api.storage.put(key, text)
    return key


def read():
    """Send every note, one per line; returns how much of the quota is used."""
    for key in api.storage.keys(PREFIX):
        api.send(api.storage.get(key, b"") + b"\n")
    return api.storage.usage()


def remove(key):
    """Delete one note; True if it existed."""
    return api.storage.delete(key)


def attach(name, text):
    """Keep a larger text as a file-like object: appended to at close, read back whole."""
    with api.storage.open(f"file/{name}", "ab") as f:
        f.write(text.encode())
    with api.storage.open(f"file/{name}", "rb") as f:
        return len(f.read())
