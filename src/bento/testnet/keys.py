"""Keys made before a testnet's tor processes start: relay identities, v3 authority keys.

Both come from Debian's tor package (``tor --list-fingerprint`` and ``tor-gencert``);
every node's keys are made in parallel, since each tool run costs a second or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bento.testnet.errors import TestnetError
from bento.testnet.state import Node, Role

TOR = "tor"


def generate(nodes: list[Node]) -> None:
    """Relay identity keys for every relay, v3 authority keys for authorities (in parallel).

    Sets each relay's ``fingerprint`` and each authority's ``v3_identity``.
    """
    jobs: list[tuple[Node, str, subprocess.Popen[bytes]]] = []
    for node in nodes:
        if not node.is_relay:
            continue
        data = Path(node.data_dir)
        jobs.append((node, "identity", _run(_identity_argv(node), cwd=data)))
        if node.role is Role.AUTHORITY:
            keys = data / "keys"
            keys.mkdir(mode=0o700, exist_ok=True)
            jobs.append((node, "authority", _run(_authority_argv(node, keys), cwd=data, stdin=b"\n")))
    for node, what, proc in jobs:
        out = proc.stdout.read() if proc.stdout is not None else b""
        if proc.wait(timeout=120) != 0:
            raise TestnetError(
                f"generating {what} keys for {node.nickname} failed: {out.decode(errors='replace').strip()}"
            )
    for node in nodes:
        if node.is_relay:
            node.fingerprint = (Path(node.data_dir) / "fingerprint").read_text().split()[1]
        if node.role is Role.AUTHORITY:
            cert = (Path(node.data_dir) / "keys" / "authority_certificate").read_text()
            node.v3_identity = next(
                line.split()[1] for line in cert.splitlines() if line.startswith("fingerprint ")
            )


def _identity_argv(node: Node) -> list[str]:
    return [
        TOR,
        "--quiet",
        "--ignore-missing-torrc",
        "-f",
        os.devnull,
        "--defaults-torrc",
        os.devnull,
        "--list-fingerprint",
        "--orport",
        "1",
        "--nickname",
        node.nickname,
        "--datadirectory",
        node.data_dir,
    ]


def _authority_argv(node: Node, keys: Path) -> list[str]:
    return [
        "tor-gencert",
        "--create-identity-key",
        "-m",
        "12",
        "-a",
        f"127.0.0.1:{node.dir_port}",
        "-i",
        str(keys / "authority_identity_key"),
        "-s",
        str(keys / "authority_signing_key"),
        "-c",
        str(keys / "authority_certificate"),
        "--passphrase-fd",
        "0",
    ]


def _run(argv: list[str], *, cwd: Path, stdin: bytes | None = None) -> subprocess.Popen[bytes]:
    if shutil.which(argv[0]) is None:
        raise TestnetError(
            f"`{argv[0]}` is not installed",
            fix="install Debian's tor package (sudo apt-get install tor), or run ./scripts/demo",
        )
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if proc.stdin is not None:
        proc.stdin.write(stdin or b"")
        proc.stdin.close()
    return proc
