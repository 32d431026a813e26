"""How an operator runs the box: the systemd unit in contrib/, and logs for the journal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bento.server.tokens import new_token

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "bento-box.service"
INSTALLED_AT = "/usr/local/bin/bento"  # where docs/operator.md installs the command


def _settings() -> dict[str, str]:
    lines = [line for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_unit_is_hardened_and_keeps_what_bubblewrap_needs() -> None:
    settings = _settings()
    for key, value in {
        "User": "bento",
        "Delegate": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "StateDirectory": "bento",
        "StateDirectoryMode": "0700",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == value, f"{key}={settings.get(key)!r}, not {value!r}"
    assert "tor.service" in settings["After"].split()
    assert set(settings["RestrictNamespaces"].split()) >= {"user", "mnt", "pid", "net"}, "bwrap's namespaces"
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"].split(), "bwrap brings up loopback by netlink"
    assert settings["ExecStart"].startswith(f"{INSTALLED_AT} server")
    # Each of these makes every sandbox fail (see the unit's opening comment).
    for breaks_bubblewrap in ("ProtectKernelTunables", "ProtectKernelLogs", "ProtectProc", "ProcSubset",
                              "ProtectHostname", "PrivateUsers", "SystemCallFilter"):  # fmt: skip
        assert breaks_bubblewrap not in settings, breaks_bubblewrap


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: point it at this checkout's bento.
    bento = Path(sys.executable).with_name("bento")
    assert bento.exists(), bento
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(bento)))
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr

    unit.write_text(unit.read_text().replace("Delegate=yes", "Delegate=yes\nProtectSystm=strict"))
    typo = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectSystm" in typo.stderr, "verify reads the unit (a misspelt setting is reported)"


LOG_SOME = """
import logging, os, sys
from bento.server import journal
if sys.argv[1] == "journal":
    stat = os.fstat(2)
    os.environ["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
journal.configure(verbose=True)
log = logging.getLogger("bento.server")
log.info("serving %s.onion", "a" * 56)
log.warning("refused Bearer %s for session %s", sys.argv[2], "0f" * 16)
try:
    raise ValueError("token " + sys.argv[2])
except ValueError:
    log.exception("a session failed")
"""


def _log_lines(mode: str, token: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("JOURNAL_STREAM", None)
    ran = subprocess.run(
        [sys.executable, "-c", LOG_SOME, mode, token], capture_output=True, text=True, timeout=60, env=env
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stderr.splitlines()


def test_under_systemd_log_lines_carry_their_priority_and_fields_and_no_token() -> None:
    token = new_token()
    lines = _log_lines("journal", token)
    assert lines[0] == f'<6>logger=bento.server level=info msg="serving {"a" * 56}.onion"'
    assert lines[1] == (
        f'<4>logger=bento.server level=warning msg="refused Bearer [redacted] for session {"0f" * 16}"'
    )
    assert lines[2].startswith(
        '<3>logger=bento.server level=error msg="a session failed" exception=ValueError'
    )
    assert len(lines) == 3, "one line per record: a traceback is a field, not lines of its own"
    assert re.search(r"traceback=\".*ValueError: token \[redacted\]", lines[2])
    assert all(token not in line for line in lines)


def test_elsewhere_log_lines_are_for_people_and_carry_no_token() -> None:
    token = new_token()
    lines = _log_lines("terminal", token)
    assert "bento.server WARNING refused Bearer [redacted] for session" in lines[1]
    assert not lines[0].startswith("<"), "no priority prefix outside the journal"
    assert token not in "\n".join(lines)
