"""`fix`: plan file edits from a check report (a diff first), then apply them atomically."""

from __future__ import annotations

from sysctl_doctor.fix.apply import AppliedEdit, apply_now, apply_plan, write_atomic
from sysctl_doctor.fix.plan import METHODS, FileEdit, FixPlan, plan_fix

__all__ = ["METHODS", "AppliedEdit", "FileEdit", "FixPlan", "apply_now", "apply_plan", "plan_fix", "write_atomic"]
