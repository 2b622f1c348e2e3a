"""A `Root` view for the boot readers in which one bad link does not stop the analysis.

systemd, udev and kmod skip an entry they cannot resolve (a symlink loop) with a warning and go
on; the boot timeline does the same: through this view a loop reads as an unreadable entry
(`PathKind.OTHER`, reading it raises OSError) and is reported as a diagnostic.
"""

from __future__ import annotations

from typing import List

from sysctl_doctor.root import ChasedPath, PathKind, Root, RootError, _components


class TolerantRoot(Root):
    def __init__(self, root: Root) -> None:  # a view: no new validation of the directory
        self.path = root.path
        self.unreadable = root.unreadable  # one record for the root and its views
        self.unreadable_files = root.unreadable_files
        self._broken: set = set()  # inside paths whose chase failed (reported as problems already)
        self._live = root.is_live  # a view of the running host (`check --live`) stays one
        self.problems: List[str] = []

    def chase(self, path: str, *, follow_final: bool = True) -> ChasedPath:
        try:
            return super().chase(path, follow_final=follow_final)
        except RootError as exc:
            if str(exc) not in self.problems:
                self.problems.append(str(exc))
            requested = "/" + "/".join(_components(path))
            self._broken.add(requested)
            return ChasedPath(requested, requested, self.host_path(requested), PathKind.OTHER)

    def note_unreadable_file(self, inside: str, reason: str) -> None:
        if "/" + "/".join(_components(inside)) not in self._broken:  # a loop is reported once, as a problem
            super().note_unreadable_file(inside, reason)
