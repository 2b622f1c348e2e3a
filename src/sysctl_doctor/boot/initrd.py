"""List what an initramfs image really loads: the image's own module lists, read from its cpio.

An image is one or more concatenated "newc" cpio archives (an uncompressed early one with CPU
microcode first, on Debian), the last usually compressed (zstd on Debian 12, gzip or xz elsewhere).
Inside, initramfs-tools' init loads every module named in ``conf/modules``; a systemd-based (dracut)
initrd runs systemd-modules-load on its ``etc/modules-load.d/*.conf`` and reads ``rd.driver.pre=`` /
``rd.modules_load=`` from ``etc/cmdline.d/*.conf``.

The image is what boots, so it is authoritative: a module listed in /etc/initramfs-tools/modules but
missing from an image that was not rebuilt is not loaded.
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.boot.modules_load import module_name

NEWC_MAGICS = (b"070701", b"070702")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"


class InitrdError(Exception):
    """The image cannot be read (unknown compression, truncated archive)."""


@dataclass
class InitrdContents:
    image: str
    compression: List[str] = field(default_factory=list)  # per archive: "none", "zstd", "gzip", "xz"
    names: List[str] = field(default_factory=list)  # every path in the image
    loads: List[Tuple[str, str]] = field(default_factory=list)  # (module, "image:conf/modules:3")
    error: Optional[str] = None

    def has_module_file(self, module: str) -> bool:
        wanted = module_name(module)
        for name in self.names:
            base = name.rsplit("/", 1)[-1]
            if ".ko" in base and module_name(base.split(".ko", 1)[0]) == wanted:
                return True
        return False


def _align4(value: int) -> int:
    return (value + 3) & ~3


def _parse_newc(data: bytes, pos: int, files: Dict[str, bytes], names: List[str],
                wanted=lambda name: False) -> int:
    """Parse one newc archive at `pos`; return the position after its trailer."""
    while True:
        header = data[pos:pos + HEADER_LEN]
        if len(header) < HEADER_LEN or header[:6] not in NEWC_MAGICS:
            raise InitrdError(f"bad cpio header at offset {pos}")
        try:
            filesize = int(header[54:62], 16)
            namesize = int(header[94:102], 16)
        except ValueError as exc:
            raise InitrdError(f"bad cpio header at offset {pos}") from exc
        name_start = pos + HEADER_LEN
        name = data[name_start:name_start + namesize - 1].decode("utf-8", errors="replace")
        data_start = _align4(name_start + namesize)
        data_end = data_start + filesize
        if data_end > len(data):
            raise InitrdError(f"truncated cpio member {name!r}")
        pos = _align4(data_end)
        if name == TRAILER:
            return pos
        names.append(name)
        if wanted(name):
            files[name] = data[data_start:data_end]


def _decompress(blob: bytes) -> Tuple[str, bytes]:
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        return "zstd", reader.read()
    if blob[:2] == b"\x1f\x8b":
        return "gzip", zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob)
    if blob[:6] == b"\xfd7zXZ\x00":
        decomp = lzma.LZMADecompressor()
        return "xz", decomp.decompress(blob)
    raise InitrdError(f"unknown compression (magic {blob[:4].hex()})")


def _wanted(name: str) -> bool:
    return (
        name in ("conf/modules", "./conf/modules")
        or (name.lstrip("./").startswith("etc/modules-load.d/") and name.endswith(".conf"))
        or (name.lstrip("./").startswith("etc/cmdline.d/") and name.endswith(".conf"))
    )


def read_initrd(image: str, data: bytes) -> InitrdContents:
    """The contents of an image's bytes (`image` is its path inside the root, for messages)."""
    result = InitrdContents(image=image)
    files: Dict[str, bytes] = {}
    pos = 0
    try:
        while pos < len(data):
            while pos < len(data) and data[pos] == 0:
                pos += 1  # padding between archives
            if pos >= len(data):
                break
            if data[pos:pos + 6] in NEWC_MAGICS:
                result.compression.append("none")
                pos = _parse_newc(data, pos, files, result.names, _wanted)
                continue
            kind, inner = _decompress(data[pos:])
            result.compression.append(kind)
            inner_pos = 0
            while inner_pos < len(inner):
                while inner_pos < len(inner) and inner[inner_pos] == 0:
                    inner_pos += 1
                if inner_pos >= len(inner):
                    break
                inner_pos = _parse_newc(inner, inner_pos, files, result.names, _wanted)
            break
    except (InitrdError, zlib.error, lzma.LZMAError) as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - zstandard raises its own error type
        result.error = f"{type(exc).__name__}: {exc}"
    for name in sorted(files):
        text = files[name].decode("utf-8", errors="replace")
        short = name.lstrip("./")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            where = f"{image}:{short}:{number}"
            if short.startswith("etc/cmdline.d/"):
                for word in line.split():
                    key, _, value = word.partition("=")
                    if key.replace("-", "_") in ("rd.driver.pre", "rd.modules_load") and value:
                        result.loads.extend((module_name(m), where) for m in value.split(",") if m)
            else:
                result.loads.append((module_name(line.split()[0]), where))
    return result


def image_for_kernel(root, kernel: Optional[str]) -> Optional[str]:
    """The initramfs image the boot of `kernel` uses (Debian and Fedora names), if the root has one."""
    from sysctl_doctor.root import PathKind

    if not kernel:
        return None
    for name in (f"/boot/initrd.img-{kernel}", f"/boot/initramfs-{kernel}.img"):
        if root.kind(name) is PathKind.FILE:
            return name
    return None


def timeline_with_image(root, timeline, kernel: Optional[str]):  # type: ignore[no-untyped-def]
    """The timeline with the initramfs loads taken from the image itself instead of the configuration lists.

    Returns a new BootTimeline (the given one is not changed), or `timeline` itself when there is no image
    (the lists then stand) — callers compare identity to know whether anything was read.
    """
    import dataclasses

    from sysctl_doctor.boot.model import BEFORE, ModuleLoad
    from sysctl_doctor.errors import Diagnostic

    image = image_for_kernel(root, kernel)
    if image is None:
        return timeline
    refined = dataclasses.replace(timeline, loads=list(timeline.loads), diagnostics=list(timeline.diagnostics),
                                  stale_initramfs=list(timeline.stale_initramfs))
    try:
        data = root.read_bytes(image)
    except OSError as exc:
        refined.diagnostics.append(Diagnostic(f"cannot read the initramfs image: {exc.strerror}", image))
        return refined
    contents = read_initrd(image, data)
    if contents.error:
        refined.diagnostics.append(Diagnostic(f"cannot list the initramfs image ({contents.error}); "
                                              "using the configured module lists", image))
        return refined
    listed = [item for item in refined.loads if item.by == "initramfs"]
    in_image = {module for module, _ in contents.loads}
    for load in listed:
        if load.module not in in_image:
            refined.stale_initramfs.append((load.module, load.evidence, image))
    refined.loads = [item for item in refined.loads if item.by != "initramfs"]
    early = [ModuleLoad(module, "initramfs", BEFORE, where, "the initramfs image loads it before init starts",
                        "the initramfs runs before the real root's init") for module, where in contents.loads]
    refined.loads[:0] = early
    return refined


def newc_archive(files: Dict[str, str]) -> str:
    """An uncompressed newc cpio archive of text files (valid as an initramfs: the kernel and
    initramfs-tools' COMPRESS=cat accept it). Used to describe example roots in plain text."""
    out = []
    ino = 1
    for name, text in list(files.items()) + [(TRAILER, "")]:
        data = text.encode()
        mode = 0o100644 if name != TRAILER else 0
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        header = "070701" + "".join(f"{v:08x}" for v in fields)
        entry = header + name + "\0"
        entry += "\0" * (_align4(len(entry)) - len(entry))
        entry += text + "\0" * (_align4(len(data)) - len(data))
        out.append(entry)
        ino += 1
    return "".join(out)
