"""Property tests: any bytes in, no crash out; and invariants the real tools guarantee."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sysctl_doctor.config.model import KeyTree, key_to_path, path_to_key
from sysctl_doctor.config.sysctl_d import effective_settings, load_sysctl_config
from sysctl_doctor.config.sysctl_glob import glob_matches
from sysctl_doctor.config.sysctl_lines import parse_sysctl_bytes, parse_systemd_line, systemd_lines
from sysctl_doctor.root import Root

TOKENS = [b"k", b".", b"/", b"=", b" ", b"\t", b"-", b"#", b";", b"*", b"?", b"[", b"]", b"{", b",", b"}",
          b"\n", b"\r", b"\x00", b"\xff", b"a", b"1", b"\xef\xbb\xbf"]
config_bytes = st.one_of(st.binary(max_size=400), st.lists(st.sampled_from(TOKENS), max_size=120).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(config_bytes)
def test_any_bytes_parse_without_crash(data):
    for flavor in ("systemd", "procps"):
        parsed = parse_sysctl_bytes(data, flavor, "/etc/sysctl.d/x.conf")
        for line in parsed.lines:
            assert line.kind in ("assignment", "exclusion")
            assert line.line >= 1
        for diag in parsed.diagnostics:
            assert diag.file == "/etc/sysctl.d/x.conf"


@settings(max_examples=200, deadline=None)
@given(config_bytes)
def test_systemd_lines_cover_all_text(data):
    # Every non-EOL byte ends up in exactly one line, in order.
    lines = list(systemd_lines(data))
    assert b"".join(text for _, text in lines) == bytes(b for b in data if b not in (0, 10, 13))
    assert [n for n, _ in lines] == list(range(1, len(lines) + 1))


@settings(max_examples=25, deadline=None)
@given(st.lists(config_bytes, min_size=1, max_size=3))
def test_whole_pipeline_never_raises(tmp_path_factory, contents):
    base = tmp_path_factory.mktemp("root")
    d = base / "etc" / "sysctl.d"
    d.mkdir(parents=True)
    for i, data in enumerate(contents):
        (d / f"{i}.conf").write_bytes(data)
    keys = KeyTree(frozenset({"k/a", "k/1"}), frozenset({"k"}))
    for flavor in ("systemd", "procps"):
        config = load_sysctl_config(Root(base), flavor)
        for setting in effective_settings(config, keys) + effective_settings(config, None, ["k"]):
            assert isinstance(setting.value, str)


component = st.text(alphabet="ab.", min_size=1, max_size=5).filter(lambda c: not c.startswith("."))


@given(st.text(alphabet="ab", min_size=1, max_size=4), st.lists(component, min_size=1, max_size=4))
def test_dotted_key_round_trips_to_the_same_path(first, rest):
    # eth0.100 as an interface name survives the trip through the dotted form (the first
    # component - "net", "kernel" - never holds a dot; if it did, the dotted form could not say so).
    path = "/".join([first, *rest])
    assert key_to_path(path_to_key(path)) == path


@given(st.text(alphabet="ab*?[]!{},", max_size=8))
def test_glob_matcher_never_raises(pattern):
    glob_matches(pattern + "/x", KeyTree(frozenset({"a/x", "b/x", "ab/x"}), frozenset({"a", "b", "ab"})), braces=True)


@given(st.text(alphabet="ab*?[]!{},.", max_size=6), st.sampled_from(["a", "b", "ab", ".a", "a.b", "ba"]))
def test_path_glob_agrees_with_tree_glob(pattern, name):
    # The whole-path matcher (used without a key tree) and the tree walk agree.
    from sysctl_doctor.config.sysctl_glob import glob_matches_path

    pat, path = f"k/{pattern}/x", f"k/{name}/x"
    tree = KeyTree.of({path})
    for braces in (False, True):
        assert glob_matches_path(pat, path, braces) == bool(glob_matches(pat, tree, braces=braces)), (pat, path)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"k.a = 1", b"", b"  ", b"#x", b"-k", b"k=", b"\t"]), max_size=8),
       st.booleans())
def test_systemd_fast_split_equals_read_line(lines, trailing):
    # parse_sysctl_bytes takes a plain split when only "\n" ends lines; it must match read_line().
    data = b"\n".join(lines) + (b"\n" if trailing else b"")
    fast = parse_sysctl_bytes(data, "systemd", "f").lines
    slow = [pl for n, raw in systemd_lines(data) for pl in [parse_systemd_line(n, raw)] if pl is not None]
    assert fast == slow
