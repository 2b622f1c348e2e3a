"""The segments the lab injects from the server side, and what each should do.

Both are the write-up's "old packet in the middle of the data": a data
segment on the established flow, from the server's address and port to the
NAT box's masqueraded port, whose ACK equals the client's next sequence number
(so a RST answering it is in the server's window) but whose SEQ lies outside
conntrack's window:

- ``seq-over-upper-bound``: 1 MB beyond the server's next sequence number —
  "SEQ is over upper bound": INVALID on every kernel. The reset.
- ``seq-under-lower-bound``: 80 KB below it, the write-up's own segment —
  "SEQ is under lower bound": INVALID before 6.1, IGNORE from 6.1 on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


INJECTED_PAYLOAD = 1234  # bytes, as in the write-up's table


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    seq_offset: int  # added to the server's next sequence number
    kernel_reason: str  # the conntrack reason code the kernel should log

    def injected_seq(self, server_next: int) -> int:
        return (server_next + self.seq_offset) % (1 << 32)


SCENARIOS: List[Scenario] = [
    Scenario("seq-over-upper-bound", "segment 1 MB above the window (SEQ over upper bound)",
             1_000_000, "seq-over-upper-bound"),
    Scenario("seq-under-lower-bound", "segment 80 KB below the window (the write-up's retransmission)",
             -80_000, "seq-under-lower-bound"),
]

BY_NAME: Dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def select_scenarios(name: Optional[str]) -> List[Scenario]:
    if name is None or name == "all":
        return list(SCENARIOS)
    return [BY_NAME[name]]


def expected_survival(scenario: str, mitigation: str, kernel: Tuple[int, int]) -> bool:
    """What the model predicts: does the connection survive on this kernel?

    The segment is addressed to the NAT box (it is the SNAT address), so when
    conntrack calls it INVALID it is not de-NATed and the box's own stack
    answers with a RST. be_liberal turns the window verdict into ACCEPT;
    dropping INVALID in INPUT stops the segment before the stack sees it;
    dropping it in FORWARD does nothing (it is never forwarded).
    """
    invalid = scenario == "seq-over-upper-bound" or (scenario == "seq-under-lower-bound" and kernel < (6, 1))
    if not invalid:
        return True
    return mitigation in ("be-liberal", "drop-invalid-input")
