"""What a website-fingerprinting attacker on the client's link sees, and where it is kept.

A *trace* is one visit to one site under one condition, as the sequence of Tor cells that
crossed the link between the client's tor and its guard: for each cell, the time since the
visit began (seconds) and its direction (+1 from the client, -1 towards it), the
convention of the fingerprinting literature.

Cells are counted from TLS record lengths (see :mod:`bento.eval.capture`): every Tor cell
is 514 bytes on a link of protocol 4 or later, and tor writes whole cells into TLS records,
so a record's length gives its number of cells whatever the MTU or TCP segmentation did to
the packets that carried it. On loopback (MTU 65536) counting packets would say nothing.

The traces are kept in the dataset of :mod:`bento.eval.dataset` (``data/wf/``), as batches
of cells per capture timestamp, and become Traces when they are read.

    >>> trace = Trace(site=0, visit=0, condition="tor", times=[0.0, 0.1, 0.2], directions=[1, -1, -1])
    >>> trace.df_input(length=5).tolist()
    [1, -1, -1, 0, 0]
    >>> [round(x, 1) for x in trace.timing_input(length=4).tolist()]
    [0.0, -0.1, -0.2, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

CELL_LEN = 514  # bytes of a cell on the wire, link protocol >= 4 (4-byte circuit ids)
TLS13_OVERHEAD = 17  # a TLS 1.3 record's length counts the content type and the 16-byte tag
DF_LENGTH = 5000  # the input length of the published Deep Fingerprinting model


def cells_in_record(length: int) -> int:
    """How many cells a TLS application-data record of ``length`` bytes carries (at least 1)."""
    return max(1, round((length - TLS13_OVERHEAD) / CELL_LEN))


@dataclass
class Trace:
    site: int
    visit: int
    condition: str
    times: Sequence[float] | npt.NDArray[Any] = field(repr=False)  # seconds since the first cell
    directions: Sequence[int] | npt.NDArray[Any] = field(repr=False)  # +1 from the client, -1 towards it
    label: str = ""

    def __len__(self) -> int:
        return len(self.directions)

    def df_input(self, length: int = DF_LENGTH) -> npt.NDArray[np.int8]:
        """Directions, cut or zero-padded to ``length``: Deep Fingerprinting's input."""
        out = np.zeros(length, dtype=np.int8)
        d = np.asarray(self.directions[:length], dtype=np.int8)
        out[: len(d)] = d
        return out

    def timing_input(self, length: int = DF_LENGTH) -> npt.NDArray[np.float32]:
        """Direction times time, cut or zero-padded: Tik-Tok's directional timing."""
        out = np.zeros(length, dtype=np.float32)
        n = min(length, len(self.directions))
        out[:n] = np.asarray(self.directions[:n], dtype=np.float32) * np.asarray(self.times[:n], np.float32)
        return out
