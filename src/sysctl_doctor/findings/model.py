"""Plain data of the findings layer: rules, their examples, findings, and the analysis they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Tuple, Union

class Severity(str, Enum):
    """How bad a finding is (the one definition: rules, CT advice, reports and exit codes use it).

    A str enum: it compares, hashes, formats and serialises (JSON) as its value ("error")."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
SEVERITIES: Tuple[Severity, ...] = tuple(Severity)  # most severe first

FileContent = Union[str, Tuple[str, str]]  # text, or ("link", target)


@dataclass(frozen=True)
class Example:
    """A root that shows a rule: `files` laid over `base` ("incident" = examples/incident, "empty")."""

    description: str
    files: Dict[str, FileContent] = field(default_factory=dict)
    base: str = "incident"
    removed: Tuple[str, ...] = ()  # inside paths deleted from the base
    cmdline: Optional[str] = None
    kernel: Optional[str] = None  # the kernel build to predict for (None: the root's newest)
    live_values: Optional[Dict[str, str]] = None  # slash key -> value, standing in for /proc/sys
    # NAT facts `check` cannot read from a root (kube-proxy version, logged INVALID reasons), given instead
    nat_facts: Optional[Dict[str, object]] = None


@dataclass(frozen=True)
class Rule:
    code: str  # "SD101", stable forever
    name: str  # "module-loaded-after-sysctl"
    severity: Severity
    title: str  # one line
    rationale: str  # why it matters (paragraphs)
    fix: str  # what to do
    example: Example  # a root where the rule fires
    passing: Optional[Example] = None  # a root where it does not


@dataclass
class Finding:
    code: str
    severity: Severity
    key: Optional[str]
    message: str
    fix: str
    file: Optional[str] = None
    line: Optional[int] = None
    keys: Tuple[str, ...] = ()  # a finding about several keys (one per file): all of them; `key` is the first

    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Recommendation:
    """What a CT rule advises for a set of NAT facts (`advise(facts)`), before it becomes a Finding."""

    code: str
    severity: Severity
    title: str
    text: str
    fix: Optional[str] = None
