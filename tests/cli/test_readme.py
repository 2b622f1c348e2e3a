"""The README's sample outputs are what the commands print now (a stale sample misleads every new user).

If a change alters the output on purpose, paste the new output into the README (the command is in the
sample's first line) and this passes again.
"""

from __future__ import annotations

import re

from cli.console import INCIDENT, REPO, run_cli


def _sample(after: str) -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index(after) + len(after)
    return readme[start:readme.index("```", start)]


def test_check_sample_is_the_real_output() -> None:
    result = run_cli(["check", "--root", str(INCIDENT)], cwd=REPO)
    assert result.returncode == 1
    printed = result.stdout.decode().replace(str(INCIDENT), "/…/examples/incident")
    assert printed == _sample("$ sysctl-doctor check --root examples/incident\n")


def test_explain_provider_sample_is_the_real_output() -> None:
    result = run_cli(["explain", "net.netfilter.nf_conntrack_tcp_be_liberal", "--root", str(INCIDENT)], cwd=REPO)
    assert result.returncode == 0
    sample = _sample("e.g. on the example root:\n\n```\n")
    assert sample.strip() and sample in result.stdout.decode()


def test_fix_sample_lines_are_printed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "incident"
    shutil.copytree(INCIDENT, root, symlinks=True)
    first = run_cli(["fix", "--root", str(root)]).stdout.decode()
    second = run_cli(["fix", "--root", str(root)]).stdout.decode()
    sample = _sample("$ cp -a examples/incident /tmp/incident && sysctl-doctor fix --root /tmp/incident\n")
    written, again = re.split(r"^\$ sysctl-doctor fix --root /tmp/incident\n", sample, flags=re.M)[:2]
    assert first == written
    assert second.splitlines()[0] == again.splitlines()[0]


def test_replay_explain_sample_is_the_real_output(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conntrack import captures

    path = tmp_path / "seed.pcap"
    captures.write_ethernet_pcap(str(path), captures.seed_packets())
    result = run_cli(["conntrack", "replay", str(path), "--kernel", "6.18", "--explain", "204"], cwd=REPO)
    assert result.returncode == 0
    assert result.stdout.decode() == _sample("$ sysctl-doctor conntrack replay seed.pcap --kernel 6.18 --explain 204\n")
