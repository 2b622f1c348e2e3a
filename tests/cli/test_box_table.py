"""`check`'s table drawn without rich for output that is not a terminal must be exactly what rich draws there
(the real rich, same options as the command's piped Console), and piped `check` must not import rich."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from sysctl_doctor.report.text_report import _box_table, _rich_table

from cli.console import INCIDENT

Rows = List[Tuple[List[str], str]]


def _rich(rows: Rows, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, no_color=True, soft_wrap=True, highlight=False)
    console.print(_rich_table(rows))
    return out.getvalue()


cell = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
row = st.tuples(st.lists(cell, min_size=5, max_size=5), st.sampled_from(["", "green", "red", "bold red"]))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(row, max_size=8), width=st.sampled_from([120, 80, 60]))
def test_the_box_table_is_richs_table(rows, width) -> None:  # type: ignore[no-untyped-def]
    rows = [(list(cells), style) for cells, style in rows]
    drawn = _box_table(rows, width)
    if drawn is not None:
        assert drawn == _rich(rows, width)
    else:  # only where rich must fold cells: the table is wider than the console
        widest = [max([len(name)] + [len(c[i]) for c, _ in rows]) for i, name in enumerate(
            ("key", "configured", "provider", "after boot", "verdict"))]
        assert sum(widest) + 14 > width


def test_cells_rich_must_measure_are_left_to_rich() -> None:
    for odd in ("naïve", "日本", "a\tb", "a\nb", "\x1b[31m"):
        assert _box_table([([odd, "1", "builtin", "1", "applied"], "")], 120) is None
    assert _box_table([(["k", "1", "builtin", "1", "applied"], "")], 120) == _rich(
        [(["k", "1", "builtin", "1", "applied"], "")], 120)
    assert _box_table([], 120) == _rich([], 120)  # no key: the header alone


def test_piped_check_does_not_import_rich() -> None:
    code = ("import sys\nfrom sysctl_doctor.cli import main\nsys.argv = ['sysctl-doctor', 'check', '--root', %r]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('rich imported: %%s' %% any(m.split('.')[0] == 'rich' for m in sys.modules))\n"
            % str(INCIDENT))
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert "SD101" in done.stdout.decode()
    assert done.stderr.decode().endswith("rich imported: False"), done.stderr.decode()[-2000:]
