"""SD110: the sysctl step is not ordered after the module-loading step (or one of them does not run)."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import BEFORE
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule

RULE = Rule(
    code="SD110",
    name="broken-boot-ordering",
    severity=ERROR,
    title="The sysctl step is not ordered after module loading",
    rationale=(
        "Module keys configured in sysctl.d only work if modules listed for loading at boot are loaded "
        "before the sysctl step: systemd ships systemd-sysctl.service with After=systemd-modules-load.service. "
        "A drop-in that resets After=, a masked systemd-modules-load.service or systemd-sysctl.service, or "
        "(sysvinit/OpenRC) scripts with no dependency between them break that guarantee for every module key."
    ),
    fix=(
        "systemd: remove the masking link or the drop-in that resets After=, or add a drop-in "
        "/etc/systemd/system/systemd-sysctl.service.d/after-modules.conf with "
        "[Unit] After=systemd-modules-load.service. sysvinit: name kmod in the `# Required-Start:` (or "
        "`# Should-Start:`) line of /etc/init.d/procps's LSB header, then re-order the scripts with "
        "`update-rc.d procps defaults` (insserv). OpenRC: rc_after=\"modules\" in /etc/conf.d/sysctl."
    ),
    example=Example(
        "A drop-in resets systemd-sysctl's After= list.",
        files={"/etc/systemd/system/systemd-sysctl.service.d/override.conf": "[Unit]\nAfter=\n",
               "/etc/modules": "nf_conntrack\n"},
    ),
    passing=Example("The shipped ordering.", files={"/etc/modules": "nf_conntrack\n"}),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    timeline = analysis.timeline
    if not timeline.sysctl_runs:
        yield Finding(RULE.code, RULE.severity, None,
                      f"{timeline.sysctl_step} does not run at boot ({timeline.sysctl_note}): no sysctl.d setting is applied",
                      RULE.fix)
        return
    relation = timeline.modules_step_relation
    if relation == BEFORE:
        return
    if relation in ("masked", "disabled"):
        what = f"{timeline.modules_step} is {relation} ({timeline.modules_step_note})"
    elif relation == "race":
        what = f"{timeline.modules_step} and {timeline.sysctl_step} are not ordered ({timeline.modules_step_note})"
    else:
        what = f"{timeline.modules_step} runs after {timeline.sysctl_step} ({timeline.modules_step_note})"
    modules = timeline.modules_load.modules()
    listed = f"; modules listed for it: {', '.join(modules)}" if modules else ""
    yield Finding(RULE.code, RULE.severity, None, what + listed, RULE.fix)
