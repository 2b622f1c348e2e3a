"""The kernel command line the next boot will see, and what it asks to load.

Sources, first found wins: an explicit ``--cmdline`` string; /etc/kernel/cmdline
(systemd-boot/kernel-install); /etc/default/grub (``GRUB_CMDLINE_LINUX`` and
``GRUB_CMDLINE_LINUX_DEFAULT``, then /etc/default/grub.d/*.cfg which grub-mkconfig
sources after it); on a live host without either, /proc/cmdline.

systemd parses ``modules_load=``/``modules-load=`` (``-``/``_`` equivalent in the key)
as a comma-separated module list; ``rd.modules_load=`` only applies inside a
systemd-based initrd (dracut), which still makes the module loaded before the real
root's systemd-sysctl runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from sysctl_doctor.boot.modules_load import ModuleRequest, module_name
from sysctl_doctor.root import PathKind, Root


def split_cmdline(text: str) -> List[str]:
    """Words of a kernel command line: whitespace-separated, double quotes group."""
    words: List[str] = []
    current = ""
    quoted = False
    in_word = False
    for char in text:
        if char == '"':
            quoted = not quoted
            in_word = True
            continue
        if char.isspace() and not quoted:
            if in_word:
                words.append(current)
            current, in_word = "", False
            continue
        current += char
        in_word = True
    if in_word:
        words.append(current)
    return words


def _key(word: str) -> Tuple[str, Optional[str]]:
    key, eq, value = word.partition("=")
    return key.replace("-", "_"), (value if eq else None)


@dataclass
class KernelCmdline:
    text: str
    source: str  # "/etc/default/grub", "--cmdline", "/proc/cmdline", "" (none found)
    words: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.words:
            self.words = split_cmdline(self.text)

    def module_requests(self) -> List[ModuleRequest]:
        out: List[ModuleRequest] = []
        for word in self.words:
            key, value = _key(word)
            if key not in ("modules_load", "rd.modules_load") or not value:
                continue
            for name in value.split(","):
                if name.strip():
                    out.append(
                        ModuleRequest(
                            module=module_name(name),
                            source=f"kernel command line {word.split('=', 1)[0]}= ({self.source})",
                        )
                    )
        return out

    def value(self, key: str) -> Optional[str]:
        """The last value of `key` (``-``/``_`` equivalent), None when absent."""
        wanted = key.replace("-", "_")
        found: Optional[str] = None
        for word in self.words:
            k, v = _key(word)
            if k == wanted:
                found = v if v is not None else ""
        return found


def _grub_assignments(text: str) -> dict:
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, rest = line.partition("=")
        name = name.strip()
        if name.startswith("export "):
            name = name[len("export "):].strip()
        if name not in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
            continue
        try:
            parts = shlex.split(rest, comments=True)
        except ValueError:
            parts = [rest.strip().strip("\"'")]
        value = " ".join(parts)
        # "$GRUB_CMDLINE_LINUX foo" appends to the previous value
        for ref in ("$GRUB_CMDLINE_LINUX_DEFAULT", "${GRUB_CMDLINE_LINUX_DEFAULT}", "$GRUB_CMDLINE_LINUX", "${GRUB_CMDLINE_LINUX}"):
            ref_name = ref.strip("${}")
            if ref in value:
                value = value.replace(ref, values.get(ref_name, ""))
        values[name] = value.strip()
    return values


def read_cmdline(root: Root, explicit: Optional[str] = None, live_proc_cmdline: Optional[Path] = None) -> KernelCmdline:
    if explicit is not None:
        return KernelCmdline(explicit, "--cmdline")
    if root.kind("/etc/kernel/cmdline") is PathKind.FILE:
        text = root.read_config("/etc/kernel/cmdline")
        if text is not None:
            return KernelCmdline(text.strip(), "/etc/kernel/cmdline")
    grub_files = []
    if root.kind("/etc/default/grub") is PathKind.FILE:
        grub_files.append("/etc/default/grub")
    grub_files.extend(
        f"/etc/default/grub.d/{n}" for n in root.listdir("/etc/default/grub.d") if n.endswith(".cfg")
    )
    if grub_files:
        values: dict = {}
        for path in grub_files:
            text = root.read_config(path)
            if text is not None:
                values.update(_grub_assignments(text))
        text = " ".join(v for v in (values.get("GRUB_CMDLINE_LINUX", ""), values.get("GRUB_CMDLINE_LINUX_DEFAULT", "")) if v)
        return KernelCmdline(text, " + ".join(grub_files))
    if live_proc_cmdline is not None:
        try:
            return KernelCmdline(live_proc_cmdline.read_text().strip(), str(live_proc_cmdline))
        except OSError:
            pass
    return KernelCmdline("", "")
