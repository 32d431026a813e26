"""Blinded tokens from the client's side: single-use rights the box cannot link to their issue.

The holder of a function's plain invocation (or shutdown) token asks the box for blinded
tokens (RFC 9474 blind signatures in Privacy Pass's token structure, see
:mod:`bento.protocol.private_token`). Each is good for exactly one invocation (or one
shutdown); when it is spent, the box cannot tell which of its signings made it, so it cannot
tell who it gave the right to. Hand them to others, or use them yourself so that your
invocations cannot be linked to each other through their tokens.

A blinded token goes where a plain token goes: put it in a :class:`Deployment` as the
invocation token, invoke once, and attach to the session it opened as often as needed.

    async with Box(onion, socks=socks) as box:
        tokens = await obtain(box, deployment, "invoke", count=5)
        session = await box.invoke(with_token(deployment, tokens[0]), "main")

Key consistency: the box makes one key per function and right; this client remembers the
key id of each right in the deployment (``token_keys``) the first time and refuses any answer
signed under another, since a box handing each requester its own key could link them. It also
refuses a key that is not a sound RSA-2048 key (``blind_rsa.check_public_key``), and a token
is spent only once the session it pays for has started.
"""

from __future__ import annotations

import base64
import dataclasses

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.errors import BentoError
from bento.protocol import blind_rsa, private_token
from bento.protocol.messages import BlindTokenKey, BlindTokenRequest, BlindTokenResponse
from bento.protocol.private_token import Right, TokenError, TokenRequest, key_id

MAX_BATCH = 32


async def obtain(box: Box, deployment: Deployment, right: Right, count: int) -> list[str]:
    """``count`` blinded tokens for ``right``; records the box's key id in ``deployment``."""
    if count < 1:
        raise BentoError("ask for at least one token")
    token = deployment.shutdown_token if right == "shutdown" else deployment.invocation_token
    path = f"/v1/functions/{deployment.function_id}/blind-tokens/{right}"
    key = await box._request("GET", path, BlindTokenKey, token=token)
    public = _check_key(box, deployment, right, key)
    tokens: list[str] = []
    while len(tokens) < count:
        batch = min(MAX_BATCH, count - len(tokens))
        pending = [TokenRequest.new(public, deployment.function_id, right) for _ in range(batch)]
        blinded = [base64.b64encode(p.blinded).decode() for p in pending]
        body = BlindTokenRequest(right=right, blinded=blinded).model_dump()
        answer = await box._request("POST", path, BlindTokenResponse, token=token, json=body)
        _check_key(box, deployment, right, answer)
        if len(answer.blind_signatures) != batch:
            raise BentoError(f"the box {box.name} answered {len(answer.blind_signatures)} of {batch}")
        try:
            signed = zip(pending, answer.blind_signatures, strict=True)
            tokens += [p.finalize(base64.b64decode(s)) for p, s in signed]
        except (TokenError, ValueError) as exc:
            raise BentoError(f"the box {box.name} sent a bad blind signature: {exc}") from None
    return tokens[:count]


def with_token(deployment: Deployment, token: str) -> Deployment:
    """The deployment as seen by the holder of one blinded invocation token."""
    return dataclasses.replace(deployment, invocation_token=token, shutdown_token=token)


def _check_key(box: Box, deployment: Deployment, right: Right, key: BlindTokenKey) -> rsa.RSAPublicKey:
    try:
        public = serialization.load_der_public_key(base64.b64decode(key.token_key))
    except ValueError:
        raise BentoError(f"the box {box.name} sent a token key that is not a public key") from None
    if not isinstance(public, rsa.RSAPublicKey) or key_id(public).hex() != key.key_id or key.right != right:
        raise BentoError(f"the box {box.name} sent an inconsistent token key")
    try:  # before anything is blinded under it: a crafted modulus would link tokens to their issue
        blind_rsa.check_public_key(public, private_token.KEY_BITS)
    except blind_rsa.BlindSignatureError as exc:
        raise BentoError(
            f"the box {box.name} sent a token key no client may use: {exc}",
            fix="a box that sends such a key can link tokens to who asked for them; do not use it",
        ) from None
    known = deployment.token_keys.get(right)
    if known is not None and known != key.key_id:
        raise BentoError(
            f"the box {box.name} now signs {right} tokens of {deployment.name} with another key",
            fix="a box that changes keys can link tokens to who asked for them; do not use these tokens",
        )
    deployment.token_keys[right] = key.key_id
    return public
