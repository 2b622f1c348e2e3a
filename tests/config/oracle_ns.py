"""Runs the REAL systemd-sysctl / procps `sysctl --system` on fake config and a fake /proc/sys.

This script runs INSIDE a private mount namespace (tests/config/oracle.py starts it with
`unshare --mount --propagation private`), so every mount below dies with this process and
nothing on the host changes. It refuses to run in the host's mount namespace.

stdin: JSON list of jobs {"flavor", "files": {path: entry}, "keys": [slash paths; "x/" = dir]}
  entry: {"data": base64} | {"link": target} | {"dir": true}; "/etc/sysctl.conf" may be
  {"data": ...} (bound over the host file) or {"null": true} / absent (bound to /dev/null).
stdout: JSON list of {"written": {path: base64 of the first line}, "rc", "stderr"}.
"""

# Everything is imported before anything is mounted: /usr/local/lib (where this
# Python may live) is covered by a tmpfs when the host lacks /usr/local/lib/sysctl.d.
import base64
import json
import os
import subprocess
import sys

SENTINEL = b"sysctl-doctor-untouched\n"
CONF_DIRS = ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"]
SCRATCH = "/run/sysctl-doctor-oracle"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C", "SYSTEMD_LOG_LEVEL": "debug"}


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def mount_tmpfs(path):
    run("mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "sysctl-doctor-oracle", path)


def clear(path):
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            clear(p)
            os.rmdir(p)
        else:
            os.unlink(p)


def setup():
    host_ns = os.environ.get("SYSCTL_DOCTOR_HOST_MNTNS")
    if not host_ns or os.readlink("/proc/self/ns/mnt") == host_ns:
        sys.exit("refusing to run: not in a private mount namespace")
    # Make sure nothing propagates back to the host, whatever unshare did.
    run("mount", "--make-rprivate", "/")
    mount_tmpfs("/proc/sys")
    # /run and /usr/local/lib are covered whole when the sysctl.d directory is missing
    # on the host (nothing is ever created on the host itself).
    for d in CONF_DIRS:
        if os.path.isdir(d):
            mount_tmpfs(d)
        else:
            parent = os.path.dirname(d)
            mount_tmpfs(parent)
            os.mkdir(d)
    os.makedirs(SCRATCH, exist_ok=True)
    if not os.path.isdir(SCRATCH):
        sys.exit("no scratch directory")


def layout(job):
    for d in CONF_DIRS:
        clear(d)
    clear("/proc/sys")
    for path, entry in sorted(job["files"].items()):
        if path == "/etc/sysctl.conf":
            continue
        if not any(path.startswith(d + "/") for d in CONF_DIRS):
            raise SystemExit(f"refusing to write outside the sysctl.d tmpfs mounts: {path}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if "link" in entry:
            os.symlink(entry["link"], path)
        elif entry.get("null"):
            os.symlink("/dev/null", path)
        elif entry.get("dir"):
            os.mkdir(path)
        else:
            with open(path, "wb") as fh:
                fh.write(base64.b64decode(entry["data"]))
    conf = job["files"].get("/etc/sysctl.conf")
    source = "/dev/null"
    if conf is not None and "data" in conf:
        source = os.path.join(SCRATCH, "sysctl.conf")
        with open(source, "wb") as fh:
            fh.write(base64.b64decode(conf["data"]))
    run("mount", "--bind", source, "/etc/sysctl.conf")
    for key in job["keys"]:
        p = os.path.join("/proc/sys", key)
        if key.endswith("/"):
            os.makedirs(p, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(SENTINEL)
        os.chmod(p, 0o644)
    for key, target in job.get("links", {}).items():  # one kernel variable, two names
        p = os.path.join("/proc/sys", key)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(os.path.join("/proc/sys", target), p)


def read_back(job):
    written = {}
    for key in list(job["keys"]) + list(job.get("links", {})):
        if key.endswith("/"):
            continue
        with open(os.path.join("/proc/sys", key), "rb") as fh:
            data = fh.read()
        if data != SENTINEL:
            # systemd opens without O_TRUNC: the last write is the text up to the first newline.
            written[key] = base64.b64encode(data.split(b"\n", 1)[0]).decode()
    return written


def main():
    jobs = json.load(sys.stdin)
    setup()
    results = []
    for job in jobs:
        layout(job)
        if job["flavor"] == "systemd":
            argv = ["/usr/lib/systemd/systemd-sysctl"] + job.get("args", [])
        else:
            argv = ["sysctl", "--system"]
        proc = subprocess.run(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        results.append({"written": read_back(job), "rc": proc.returncode,
                        "stderr": proc.stderr.decode("utf-8", "surrogateescape"),
                        "stdout": proc.stdout.decode("utf-8", "surrogateescape")})
        run("umount", "/etc/sysctl.conf")
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
