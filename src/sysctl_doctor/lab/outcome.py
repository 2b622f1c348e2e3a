"""What the lab observed, as plain data (rendered by the CLI, compared by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

COMPLETED = "completed"  # got every byte and the peer's FIN
RESET = "reset"  # ECONNRESET / EPIPE
TIMEOUT = "timeout"  # nothing more arrived
ERROR = "error"


@dataclass
class EndResult:
    """One end of the connection (the pod's client or the server)."""

    state: str = TIMEOUT
    bytes_received: int = 0
    error: Optional[str] = None

    def to_json(self) -> dict:
        return {"state": self.state, "bytes_received": self.bytes_received, "error": self.error}


@dataclass
class InjectedSegment:
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    payload: int
    server_next: int  # the server's real next sequence number at injection
    client_next: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LabOutcome:
    scenario: str
    mitigation: str
    kernel: str
    survived: bool
    expected_survived: bool
    client: EndResult
    server: EndResult
    injected: Optional[InjectedSegment]
    nat_rst: bool  # the NAT box sent a RST to the server
    kernel_lines: List[str] = field(default_factory=list)  # raw kmsg lines of this flow
    kernel_reasons: List[str] = field(default_factory=list)  # reason codes (conntrack logs)
    kernel_verdicts: List[str] = field(default_factory=list)
    counters: Dict[str, int] = field(default_factory=dict)  # NAT netns conntrack counter deltas
    capture: Optional[str] = None  # pcap path, when kept
    capture_frames: int = 0
    server_port: int = 0
    seconds: float = 0.0
    error: Optional[str] = None  # the run itself failed (setup), not the connection

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "mitigation": self.mitigation,
            "kernel": self.kernel,
            "survived": self.survived,
            "expected_survived": self.expected_survived,
            "as_expected": self.survived == self.expected_survived,
            "client": self.client.to_json(),
            "server": self.server.to_json(),
            "injected": self.injected.to_json() if self.injected else None,
            "nat_rst": self.nat_rst,
            "kernel_lines": self.kernel_lines,
            "kernel_reasons": self.kernel_reasons,
            "kernel_verdicts": self.kernel_verdicts,
            "counters": self.counters,
            "capture": self.capture,
            "capture_frames": self.capture_frames,
            "server_port": self.server_port,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class LabReport:
    kernel: str
    outcomes: List[LabOutcome] = field(default_factory=list)
    host_changes: Dict[str, str] = field(default_factory=dict)  # host sysctls changed for the run (restored)
    kernel_log: Optional[str] = None  # why kernel lines may be missing

    @property
    def all_as_expected(self) -> bool:
        return all(o.survived == o.expected_survived and o.error is None for o in self.outcomes)

    def to_json(self) -> dict:
        return {
            "schema": "sysctl-doctor/lab/1",
            "kernel": self.kernel,
            "host_changes_restored": self.host_changes,
            "kernel_log": self.kernel_log,
            "all_as_expected": self.all_as_expected,
            "outcomes": [o.to_json() for o in self.outcomes],
        }
