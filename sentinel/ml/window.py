"""Raw counters of a channel's traffic per bucket and per window (no baseline needed).

A bucket is ``hop_seconds`` of packet time on a grid shared by every channel; a window is the
last ``window_seconds / hop_seconds`` buckets, combined by ``combine``. The engine updates the
open bucket's counters for every Modbus message, so they must stay cheap: the open bucket is a
``Bucket`` (compiled, docs/native.md: its counters are C doubles, so counting allocates
nothing), a closed one the list of its counters in ``RAW``'s order, which the features use.
"""

from __future__ import annotations

from typing import Any, Final

# Raw counters of a bucket (and of a window: sums, except the MAX_ and ADDR_ columns).
RAW = (
    "n_req",  # requests
    "n_resp",  # responses (exceptions included)
    "n_write",  # write requests (FC 5, 6, 15, 16, 22, 23)
    "n_other",  # requests that are neither reads (FC 1-4) nor writes
    "n_exc",  # exception responses
    "n_ia",  # inter-arrivals: time since the previous request of the same read/other command
    "sum_ia",
    "sum_ia2",
    "max_ia",
    "n_lat",  # responses with a latency (paired with their request)
    "sum_lat",
    "max_lat",
    "addr_lo",  # lowest address any request touched
    "addr_hi",  # one past the highest
    "n_reads",  # read responses carrying values
    "n_changed",  # of them, with values that differ from the previous read of the command
)
# Their columns. Literal constants (Final) so that the compiled tracker and engine use them
# as numbers instead of looking each up by name (docs/native.md).
N_REQ: Final = 0
N_RESP: Final = 1
N_WRITE: Final = 2
N_OTHER: Final = 3
N_EXC: Final = 4
N_IA: Final = 5
S_IA: Final = 6
S_IA2: Final = 7
MAX_IA: Final = 8
N_LAT: Final = 9
S_LAT: Final = 10
MAX_LAT: Final = 11
ADDR_LO: Final = 12
ADDR_HI: Final = 13
N_VAL: Final = 14
N_CHG: Final = 15
NRAW = len(RAW)
assert N_CHG + 1 == NRAW  # one column per name of RAW, in its order
_MAX_COLS = (MAX_IA, MAX_LAT, ADDR_HI)
_MIN_COLS = (ADDR_LO,)
ADDR_NONE_LO: Final = 65536.0
ADDR_NONE_HI: Final = -1.0


def combine(buckets: list[list[float]]) -> list[float]:
    """A window's raw counters from its buckets."""
    out = list(buckets[0])
    for b in buckets[1:]:
        for i in range(NRAW):
            if i in _MAX_COLS:
                if b[i] > out[i]:
                    out[i] = b[i]
            elif i in _MIN_COLS:
                if b[i] < out[i]:
                    out[i] = b[i]
            else:
                out[i] += b[i]
    return out


class Bucket:
    """The open bucket of a channel: one counter per name of ``RAW``. The hot path leaves three
    counts to the close: it subtracts the requests (other than writes) without an
    inter-arrival time from ``n_ia``, the responses without a latency from ``n_lat`` and those
    without read values from ``n_reads``; ``counters`` adds the requests and responses."""

    def __init__(self) -> None:
        self.n_req = 0.0
        self.n_resp = 0.0
        self.n_write = 0.0
        self.n_other = 0.0
        self.n_exc = 0.0
        self.n_ia = 0.0
        self.sum_ia = 0.0
        self.sum_ia2 = 0.0
        self.max_ia = 0.0
        self.n_lat = 0.0
        self.sum_lat = 0.0
        self.max_lat = 0.0
        self.addr_lo = ADDR_NONE_LO
        self.addr_hi = ADDR_NONE_HI
        self.n_reads = 0.0
        self.n_changed = 0.0

    def add_span(self, lo: Any, end: Any) -> None:
        """Addresses [lo, end) a request touched (lo None: none)."""
        if lo is not None:
            if lo < self.addr_lo:
                self.addr_lo = lo
            if end > self.addr_hi:
                self.addr_hi = end

    def counters(self) -> list[float]:
        """The bucket's raw counters in ``RAW``'s order, the counts left to the close done."""
        return [
            self.n_req,
            self.n_resp,
            self.n_write,
            self.n_other,
            self.n_exc,
            self.n_ia + self.n_req - self.n_write,
            self.sum_ia,
            self.sum_ia2,
            self.max_ia,
            self.n_lat + self.n_resp,
            self.sum_lat,
            self.max_lat,
            self.addr_lo,
            self.addr_hi,
            self.n_reads + self.n_resp,
            self.n_changed,
        ]
