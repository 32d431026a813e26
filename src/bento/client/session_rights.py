"""Session rights: the string that reaches one session, kept with the deployment that opened it.

A session belongs to whoever opened it. Invoking returns a *session right*, a fresh random
secret of that session alone; attaching, reading its logs or state, sending it input and
killing it need it. The function's invocation token only opens sessions: whoever else holds
it (a Dropbox capability, a Shard manifest) cannot read, feed or kill yours. The function's
shutdown token, its owner's, may still read any session's state and kill it, as it may stop
the whole function, but not attach to it or read its logs.

The client keeps each right in ``Deployment.session_rights`` (and so in the keyring, mode
0600, for ``bento attach`` from another process). It never reaches a log: a deployment's
``repr`` shows no secret.

    >>> from bento.client.keyring import Deployment
    >>> d = Deployment("fn", "f", "x" * 56, "A" * 40, "box", "inv", "shut", "boot", ["main"], 0.0)
    >>> keep(d, "s1", "right-of-s1")
    >>> bearer(d, "s1"), bearer(d, "s2")     # an unknown session: the owner's token, if any
    ('right-of-s1', 'shut')
"""

from __future__ import annotations

from bento.client.keyring import Deployment

KEPT = 1000  # rights a deployment remembers (the oldest go first); a box retains sessions for minutes
HEADER = "Bento-Session-Rights"  # a listing names the rights whose sessions it may see
LISTED = 64  # the most rights one listing names (the box's limit)


def keep(deployment: Deployment, session_id: str, right: str) -> None:
    """Remember the right of a session this deployment opened."""
    deployment.session_rights[session_id] = right
    for old in list(deployment.session_rights)[:-KEPT]:  # insertion order: the oldest first
        del deployment.session_rights[old]


def bearer(deployment: Deployment, session_id: str) -> str:
    """What to send for a session: its right; without one, the owner's shutdown token (which
    reaches a session's state and kills it, nothing more); else the invocation token, which
    the box refuses with a clear error."""
    return (
        deployment.session_rights.get(session_id) or deployment.shutdown_token or deployment.invocation_token
    )


def listing(deployment: Deployment) -> tuple[str, dict[str, str]]:
    """Token and headers to list sessions: the owner sees all; an invoker the newest it opened."""
    if deployment.shutdown_token and deployment.shutdown_token != deployment.invocation_token:
        return deployment.shutdown_token, {}
    rights = list(deployment.session_rights.values())[-LISTED:]
    return deployment.invocation_token, {HEADER: ",".join(rights)} if rights else {}
