"""The container image (deploy/image/build.sh), cached, and podman runs that follow a DaemonSet's spec.

The rootfs tarball is cached under $SYSCTL_DOCTOR_TEST_CACHE/image (default <repo>/.cache/image), named
after a hash of everything that shapes it (the build script, the package's sources, the mirror); a build
takes about 2 minutes. The podman image is imported from it once per key."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "image" / "build.sh"
EPOCH = "1700000000"


def cache_dir() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "image"


def _mirror() -> str:
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from slow.base_root import host_mirror

    return host_mirror()


def image_key(mirror: str) -> str:
    digest = hashlib.sha256()
    digest.update(BUILD.read_bytes())
    digest.update((REPO / "deploy" / "bin" / "sysctl-doctor").read_bytes())
    digest.update(mirror.encode())
    src = REPO / "src" / "sysctl_doctor"
    # what build.sh copies: the Python tree (a compiled accelerator's .c/.so stay out: the image is pure Python)
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix not in (".c", ".so")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def podman_base() -> List[str]:
    """podman run with what this machine's kernel needs: runc (crun refuses hybrid cgroups) and rlimits
    no higher than ours (the runtime cannot raise them without CAP_SYS_RESOURCE)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1024)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 1024)
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    return ["podman", *runtime, "run", "--rm", "--ulimit", f"nofile={nofile}:{nofile}",
            "--ulimit", f"nproc={nproc}:{nproc}"]


def built_image() -> str:
    """The image tag, built and imported when missing."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: mmdebstrap and rootful podman")
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"NEEDS {tool}: apt-get install {tool}")
    mirror = _mirror()
    key = image_key(mirror)
    tag = f"localhost/sysctl-doctor-test:{key}"
    if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
        return tag
    tarball = cache_dir() / f"rootfs-{key}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
            partial = Path(tmp) / "rootfs.tar"
            env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, DEBIAN_MIRROR=mirror)
            done = subprocess.run(["bash", str(BUILD), str(partial)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env, timeout=1200)
            assert done.returncode == 0, done.stdout.decode()[-4000:]
            partial.rename(tarball)
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
    # the same import as build.sh's (its TAG argument), from the cached tarball
    text = BUILD.read_text()
    changes = [line.split("--change ", 1)[1].rstrip(" \\").strip("'")
               for line in text.splitlines() if line.strip().startswith("--change ")]
    assert changes, "build.sh has no podman import --change lines"
    argv = ["podman", "import", "--quiet"]
    for change in changes:
        argv += ["--change", change]
    done = subprocess.run([*argv, str(tarball), tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    prune_older(tarball.parent, "rootfs-*.tar", keep=tarball)
    # the images of earlier keys (each ~180 MB)
    listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], stdout=subprocess.PIPE,
                            text=True).stdout.split()
    stale = [t for t in listed if t.startswith("localhost/sysctl-doctor-test:") and t != tag]
    if stale:
        subprocess.run(["podman", "rmi", *stale], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return tag


def prune_older(directory: Path, pattern: str, keep: Path, spare: int = 1) -> None:
    """Delete cached artefacts of earlier keys, keeping `keep` and the `spare` most recent others."""
    others = sorted((p for p in directory.glob(pattern) if p != keep), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[spare:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def podman_flags(pod_spec: dict, container: dict, scratch: Path, env: Optional[Dict[str, str]] = None) -> List[str]:
    """The podman flags that give a container what this pod spec gives it.

    hostPath volumes of type Directory are the node's own paths; DirectoryOrCreate ones are state this
    test must not leave on the machine, so they become directories under `scratch`."""
    flags: List[str] = []
    # never podman's default bridge: netavark would add NAT rules and ip_forward=1 to this machine
    flags += ["--network", "host" if pod_spec.get("hostNetwork") else "none"]
    if pod_spec.get("hostPID"):
        flags += ["--pid", "host"]
    ctx = dict(pod_spec.get("securityContext", {}))
    ctx.update(container.get("securityContext", {}))
    if "runAsUser" in ctx:
        flags += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
    if ctx.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if ctx.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    caps = ctx.get("capabilities", {})
    for cap in caps.get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        flags += ["--cap-add", cap]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target, ro = mount["mountPath"], mount.get("readOnly", False)
        if "emptyDir" in volume:
            flags += ["--tmpfs", f"{target}:rw,mode=1777"]
        elif "hostPath" in volume:
            host, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
            if kind == "CharDevice":
                flags += ["--device", f"{host}:{target}:{'r' if ro else 'rw'}"]
                continue
            if kind == "DirectoryOrCreate":
                host = str(scratch / host.strip("/").replace("/", "_"))
                Path(host).mkdir(parents=True, exist_ok=True)
            opts = ["ro" if ro else "rw"]
            if mount.get("mountPropagation") == "HostToContainer":
                opts.append("rslave")
            flags += ["-v", f"{host}:{target}:{','.join(opts)}"]
        else:
            raise AssertionError(f"volume kind not mapped to podman: {volume}")
    merged = {e["name"]: e["value"] for e in container.get("env", [])}
    merged.update(env or {})
    for name, value in merged.items():
        flags += ["-e", f"{name}={value}"]
    return flags


def run_container(tag: str, pod_spec: dict, container: dict, scratch: Path, env: Optional[Dict[str, str]] = None,
                  args: Optional[List[str]] = None) -> subprocess.CompletedProcess:
    """Run `container` as the DaemonSet would (its command), or the image's entrypoint with `args`."""
    flags = podman_flags(pod_spec, container, scratch, env)
    if args is None:
        command = container["command"]
        argv = [*podman_base(), *flags, "--entrypoint", command[0], tag, *command[1:], *container.get("args", [])]
    else:
        argv = [*podman_base(), *flags, tag, *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
