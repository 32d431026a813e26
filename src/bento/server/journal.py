"""The server's log lines: for the journal under systemd, for people elsewhere; never a secret.

Under systemd (``JOURNAL_STREAM`` names our stderr) each line starts with its syslog
priority, as sd-daemon(3) reads it, and carries stable ``key=value`` fields, so that
``journalctl -p warning`` and field filters work:

>>> record = logging.LogRecord("bento.server", logging.WARNING, "", 0, "lost tor: %s", ("gone",), None)
>>> JournalFormatter().format(record)
'<4>logger=bento.server level=warning msg="lost tor: gone"'

Whatever the format, the formatter blanks what looks like a token, so that a message that
quotes a request can never carry one into the journal:

>>> redact("Bearer abc.def and " + "A" * 43)
'Bearer [redacted] and [redacted]'
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

# sd-daemon(3): the kernel's syslog priorities, as a "<N>" prefix on each line.
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
HUMAN_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# A plain token is 43 base64url characters (256 bits); a bearer credential of any kind
# follows "Bearer "; a blinded one starts "pt2.". Ids (32 hex) and onion addresses (56 base32) do not match.
_SECRETS = re.compile(r"(?<=Bearer )\S+|pt2\.\S+|(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


def _value(text: str) -> str:
    """A field's value: bare when it is one simple word, else a JSON string (one line)."""
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """Lines for people (a terminal, a log file), tracebacks included; token-like strings blanked."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "logger": record.name,
            "level": record.levelname.lower(),
            "msg": redact(record.getMessage()),
        }
        if record.exc_info and record.exc_info[0] is not None:
            fields["exception"] = record.exc_info[0].__name__
            fields["traceback"] = redact(self.formatException(record.exc_info))
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        return prefix + " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def under_journal() -> bool:
    """Whether our stderr is the journal's stream (systemd.exec(5), $JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == f"{device}:{inode}"


def configure(verbose: bool) -> None:
    """Set up the server's logging: to stderr, in the journal's form under systemd."""
    handler = logging.StreamHandler()
    handler.setFormatter(JournalFormatter() if under_journal() else HumanFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("stem").setLevel(logging.WARNING)
    logging.getLogger("bento").setLevel(logging.INFO)
