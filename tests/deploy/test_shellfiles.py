"""Man pages and shell completion, checked with the real consumers: `man -l`, bash-completion's loader,
fish's `complete -C`, zsh's compinit.

The generator runs in a fresh interpreter (`python -m sysctl_doctor.cli._shellfiles`), as a packager
runs it: there the lazy command registration has loaded nothing, so a page or a completion that the
lazy loader hides would be missing here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from cli.console import REPO, console_script, run_cli


def _commands_from_help(args: List[str]) -> List[str]:
    """The subcommands a user sees in `sysctl-doctor [ARGS] --help`."""
    out = run_cli([*args, "--help"]).stdout.decode()
    section = out.split("Commands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, flags=re.M)]


def _all_command_paths() -> List[List[str]]:
    paths: List[List[str]] = [[]]
    for name in _commands_from_help([]):
        paths.append([name])
        out = run_cli([name, "--help"]).stdout.decode()
        if "Commands:\n" in out:
            paths += [[name, sub] for sub in _commands_from_help([name])]
    return paths


def _generate(kind: str, outdir: Path) -> List[Path]:
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    done = subprocess.run([sys.executable, "-m", "sysctl_doctor.cli._shellfiles", kind, str(outdir)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return [Path(line) for line in done.stdout.decode().split()]


@pytest.fixture(scope="module")
def manpages(tmp_path_factory) -> Dict[str, Path]:  # type: ignore[no-untyped-def]
    if shutil.which("man") is None:
        pytest.skip("NEEDS man: apt-get install man-db")
    return {p.name: p for p in _generate("man", tmp_path_factory.mktemp("man1"))}


def _render(page: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    return subprocess.run(["man", "--warnings", "-l", str(page)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=60)


def test_one_page_per_command_the_help_lists(manpages) -> None:  # type: ignore[no-untyped-def]
    expected = {"-".join(["sysctl-doctor", *path]) + ".1" for path in _all_command_paths()}
    assert "sysctl-doctor-conntrack-logs.1" in expected and "sysctl-doctor-lab.1" in expected
    assert set(manpages) == expected


def test_every_page_renders_without_warnings_and_lists_the_options(manpages) -> None:  # type: ignore[no-untyped-def]
    for words in _all_command_paths():  # [], [check], [conntrack, logs], [fleet, install-units], ...
        name = "-".join(["sysctl-doctor", *words]) + ".1"
        shown = _render(manpages[name])
        assert shown.returncode == 0, shown.stderr.decode()
        assert shown.stderr.decode() == "", f"{name}: {shown.stderr.decode()}"
        text = shown.stdout.decode()
        assert re.search(r"^NAME\n\s+" + re.escape(name[:-2]) + r"\s+-\s+\S", text, flags=re.M), text[:400]
        assert "EXIT STATUS" in text
        # every option of the command's own --help is on its page
        help_text = run_cli([*words, "--help"]).stdout.decode()
        options = set(re.findall(r"^  (?:-\w, )?(--[\w-]+)", help_text.split("Options:\n", 1)[1], flags=re.M))
        assert options, help_text
        for option in options:
            assert option in text, f"{name}: {option} missing"


def test_the_check_page_says_what_check_help_says(manpages) -> None:  # type: ignore[no-untyped-def]
    text = _render(manpages["sysctl-doctor-check.1"]).stdout.decode()
    assert "--root DIRECTORY" in text and "[default: /]" in text
    assert "--init [systemd|sysvinit|openrc]" in text
    assert "sysctl-doctor(1)" in text  # SEE ALSO


def test_roff_escapes_a_leading_dot_and_backslashes() -> None:
    from sysctl_doctor.cli._shellfiles import _esc

    assert _esc(".hidden request\n'quote") == "\\&.hidden request\n\\&'quote"
    assert _esc("a\\b -x") == "a\\eb \\-x"


# ---- completion -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def completions(tmp_path_factory) -> Dict[str, Path]:  # type: ignore[no-untyped-def]
    return {p.suffix[1:]: p for p in _generate("completion", tmp_path_factory.mktemp("completions"))}


def _env_with_tool() -> Dict[str, str]:
    bindir = str(console_script().parent)
    return dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", HOME=os.environ.get("HOME", "/root"))


def _bash_complete(completions: Dict[str, Path], tmp_path: Path, line: str) -> List[str]:
    """Complete `line` with bash-completion's on-demand loader (as an interactive shell does)."""
    main = Path("/usr/share/bash-completion/bash_completion")
    if not main.exists() or shutil.which("bash") is None:
        pytest.skip("NEEDS bash-completion: apt-get install bash-completion")
    user_dir = tmp_path / "bash-completion"
    (user_dir / "completions").mkdir(parents=True, exist_ok=True)
    shutil.copy(completions["bash"], user_dir / "completions" / "sysctl-doctor")
    script = f"""
        source {main}
        complete -p sysctl-doctor >/dev/null 2>&1 && {{ echo "loaded before asked"; exit 3; }}
        __load_completion sysctl-doctor || {{ echo "not found by the loader"; exit 4; }}
        complete -p sysctl-doctor
        COMP_LINE={line!r}
        read -r -a COMP_WORDS <<< "$COMP_LINE"
        [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
        COMP_POINT=${{#COMP_LINE}}
        _sysctl_doctor_completion sysctl-doctor "${{COMP_WORDS[COMP_CWORD]}}"
        printf 'REPLY %s\\n' "${{COMPREPLY[@]}}"
    """
    env = dict(_env_with_tool(), BASH_COMPLETION_USER_DIR=str(user_dir))
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=60)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "-F _sysctl_doctor_completion sysctl-doctor" in out
    return [ln[len("REPLY "):] for ln in out.splitlines() if ln.startswith("REPLY ") and ln != "REPLY "]


def test_bash_completion_loads_and_completes_commands(completions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert set(_bash_complete(completions, tmp_path, "sysctl-doctor ")) == set(_commands_from_help([]))
    assert _bash_complete(completions, tmp_path, "sysctl-doctor con") == ["conntrack"]
    assert set(_bash_complete(completions, tmp_path, "sysctl-doctor conntrack ")) == {"debug", "logs", "replay", "stats"}


def test_bash_completion_completes_options_and_choices(completions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _bash_complete(completions, tmp_path, "sysctl-doctor check --fo") == ["--format"]
    assert set(_bash_complete(completions, tmp_path, "sysctl-doctor check --init ")) == {"systemd", "sysvinit", "openrc"}
    assert set(_bash_complete(completions, tmp_path, "sysctl-doctor fix --method ")) == {"modules-load", "udev"}


def test_fish_completion_completes_subcommands(completions) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("fish") is None:
        pytest.skip("NEEDS fish: apt-get install fish")
    done = subprocess.run(["fish", "--no-config", "-c",
                           f"source {completions['fish']}; complete -C 'sysctl-doctor conntrack '"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env_with_tool(), timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    names = {line.split("\t")[0] for line in done.stdout.decode().splitlines()}
    assert names == {"debug", "logs", "replay", "stats"}


def test_zsh_completion_registers_with_compinit_and_answers(completions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("zsh") is None:
        pytest.skip("NEEDS zsh: apt-get install zsh")
    script = (f"autoload -U compinit; compinit -u -d {tmp_path}/zcompdump; source {completions['zsh']}; "
              "print -r -- \"comp=${_comps[sysctl-doctor]}\"")
    done = subprocess.run(["zsh", "-f", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=_env_with_tool(), timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert "comp=_sysctl_doctor_completion" in done.stdout.decode()
    # the protocol the zsh function speaks to the program
    answer = subprocess.run(["sysctl-doctor"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                            env=dict(_env_with_tool(), _SYSCTL_DOCTOR_COMPLETE="zsh_complete",
                                     COMP_WORDS="sysctl-doctor conntrack ", COMP_CWORD="2"))
    lines = answer.stdout.decode().splitlines()
    assert {lines[i + 1] for i in range(0, len(lines) - 2, 3) if lines[i] == "plain"} == {"debug", "logs", "replay", "stats"}
