"""Where the metrics may be served: loopback, unless the operator says a firewall guards it.

>>> check_metrics_address("127.0.0.1:9135", any_address=False)
('127.0.0.1', 9135)
>>> check_metrics_address("0.0.0.0:9135", any_address=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: 0.0.0.0 is not loopback: the metrics would be open to the network; ...
"""

from __future__ import annotations

import ipaddress


def check_metrics_address(address: str, *, any_address: bool) -> tuple[str, int]:
    """``host:port`` for the metrics endpoint; a ValueError unless it is loopback or allowed."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{address!r} is not IP:PORT (e.g. 127.0.0.1:9135)") from None
    if not (sep and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{address!r} is not IP:PORT (e.g. 127.0.0.1:9135)")
    if not ip.is_loopback and not any_address:
        raise ValueError(
            f"{host} is not loopback: the metrics would be open to the network; serve them on "
            "127.0.0.1 or ::1, or, behind a firewall, allow it with --metrics-any-address "
            "(metrics_any_address = true)"
        )
    return host, int(port)
