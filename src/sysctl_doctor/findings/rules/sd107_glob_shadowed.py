"""SD107: a glob does not apply to keys that have an explicit setting."""

from __future__ import annotations

from typing import Dict, Iterator, List

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.config.sysctl_d import GLOB_WORK_MAX
from sysctl_doctor.config.sysctl_glob import GlobIndex, glob_matches_path, normalized_alternatives
from sysctl_doctor.findings.model import INFO, Example, Finding, Rule

RULE = Rule(
    code="SD107",
    name="glob-shadowed-by-explicit",
    severity=INFO,
    title="A glob setting is shadowed by an explicit setting",
    rationale=(
        "systemd-sysctl expands a glob (net.ipv4.conf.*.rp_filter) against the keys that exist when it "
        "runs, but skips every key that has an explicit assignment (or a \"-key\" exclusion) anywhere in "
        "the configuration, whatever the file order. The explicit value wins even when the glob comes "
        "from a later file."
    ),
    fix="If the glob's value is meant for that key too, drop the explicit line; otherwise nothing to do.",
    example=Example(
        "rp_filter set for all interfaces by a glob and explicitly for 'all'.",
        files={"/etc/sysctl.d/50-rp.conf": "net.ipv4.conf.all.rp_filter = 0\n",
               "/etc/sysctl.d/60-rp.conf": "net.ipv4.conf.*.rp_filter = 2\n"},
    ),
    passing=Example("The incident node without its hardening baseline: no globs.",
                    removed=("/etc/sysctl.d/10-hardening.conf",)),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    config = analysis.config
    if config.flavor != "systemd":
        return
    globs = [a for a in config.assignments if a.is_glob]
    if not globs:
        return
    explicit = [a for a in config.assignments if not a.is_glob]
    # Each (glob, explicit key) pair where glob(3) of the pattern would return the key, as systemd-sysctl
    # expands it (one component per `*`, braces), found through an index of the globs' literal ends
    # rather than by trying every pair (quadratic: issue 16).
    index = GlobIndex([(i, alt) for i, g in enumerate(globs) for alt in normalized_alternatives(g.path, True)])
    budget = [GLOB_WORK_MAX]
    shadowed = _pairs(index, globs, [a.path for a in explicit], budget)
    skipped = _pairs(index, globs, [e.path for e in config.exclusions], budget)
    for gi, glob in enumerate(globs):
        for oi in shadowed.get(gi, ()):
            other = explicit[oi]
            message = (
                f"{glob.key} = {glob.value} ({glob.origin}) does not apply to {other.key}: it is set "
                f"explicitly at {other.origin} ({other.value})"
            )
            yield Finding(RULE.code, RULE.severity, other.key, message, RULE.fix, glob.origin.file, glob.origin.line)
        for ei in skipped.get(gi, ()):
            exclusion = config.exclusions[ei]
            message = f"{glob.key} ({glob.origin}) skips {exclusion.pattern}: excluded at {exclusion.origin}"
            yield Finding(RULE.code, RULE.severity, None, message, RULE.fix, glob.origin.file, glob.origin.line)
    if budget[0] < 0:
        yield Finding(RULE.code, RULE.severity, None,
                      f"glob work limit reached ({GLOB_WORK_MAX} key x glob tests): more keys may be shadowed "
                      "than listed here", RULE.fix)


def _pairs(index: GlobIndex, globs: List, paths: List[str], budget: List[int]) -> Dict[int, List[int]]:
    """glob number -> numbers of the paths it matches (glob(3) with braces), ascending; stops when
    `budget[0]` (tests left) runs out."""
    out: Dict[int, List[int]] = {}
    for pi, path in enumerate(paths):
        candidates = index.candidates(path)
        budget[0] -= len(candidates)
        if budget[0] < 0:
            break
        for gi in candidates:
            if glob_matches_path(globs[gi].path, path, braces=True):
                out.setdefault(gi, []).append(pi)
    return out
