"""Tricky sysctl.d cases, one `Case` each, run against the real programs and the model.

Keys live in a fake /proc/sys; "k/a" is the file /proc/sys/k/a. Each case says what it
probes in `why`. Both flavours run unless `flavors` says otherwise.
"""

from __future__ import annotations

from tests.config.oracle import Case

E, R, UL, L = "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"
CONF = "/etc/sysctl.conf"
K3 = ["k/a", "k/b", "k/c"]
IFACES = ["k/a/v", "k/b/v", "k/c/v", "k/a/w"]
VLAN = ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/eth0/rp_filter", "net/ipv4/conf/eth0.100/rp_filter",
        "net/ipv4/conf/eth0.200/rp_filter"]

CASES = [
    # --- directories and same-name override
    Case("etc-beats-usr-lib", {f"{E}/50-x.conf": "k.a = etc\n", f"{L}/50-x.conf": "k.a = lib\nk.b = lib\n"}, K3,
         why="same file name: /etc wins, the /usr/lib file is not read at all (k.b stays)"),
    Case("run-beats-usr-local-beats-usr-lib",
         {f"{R}/50-x.conf": "k.a = run\n", f"{UL}/50-x.conf": "k.a = local\nk.b = local\n",
          f"{L}/50-x.conf": "k.a = lib\nk.c = lib\n"}, K3),
    Case("etc-beats-run", {f"{E}/50-x.conf": "k.a = etc\n", f"{R}/50-x.conf": "k.a = run\nk.b = run\n"}, K3),
    Case("usr-local-beats-usr-lib", {f"{UL}/50-x.conf": "k.a = local\n", f"{L}/50-x.conf": "k.b = lib\n"}, K3),
    Case("order-by-name-across-dirs",
         {f"{L}/10-a.conf": "k.a = 10\n", f"{E}/20-b.conf": "k.a = 20\n", f"{L}/30-c.conf": "k.a = 30\n"}, K3,
         why="files are applied by name, not by directory: /usr/lib/30-c.conf beats /etc/20-b.conf"),
    Case("name-sort-is-bytewise",
         {f"{E}/a.conf": "k.a = lower\n", f"{E}/B.conf": "k.a = upper\n", f"{E}/10-x.conf": "k.b = 10\n",
          f"{E}/9-x.conf": "k.b = 9\n"}, K3, why="strcmp order: '1' < '9', 'B' < 'a'"),
    Case("mask-dev-null-in-etc", {f"{E}/50-x.conf": ("null",), f"{L}/50-x.conf": "k.a = lib\n"}, K3),
    Case("mask-empty-file", {f"{E}/50-x.conf": "", f"{L}/50-x.conf": "k.a = lib\n"}, K3),
    Case("mask-in-run", {f"{R}/50-x.conf": ("null",), f"{L}/50-x.conf": "k.a = lib\n", f"{L}/60-y.conf": "k.b = y\n"},
         K3),
    Case("cfg-suffix-ignored", {f"{E}/50-x.cfg": "k.a = cfg\n", f"{E}/50-x.conf.bak": "k.b = bak\n",
                                f"{E}/60-y.conf": "k.c = conf\n"}, K3),
    Case("hidden-file", {f"{E}/.hidden.conf": "k.a = hidden\n", f"{E}/50-x.conf": "k.b = 1\n"}, K3,
         why="systemd skips dot files; procps reads them"),
    Case("directory-named-conf", {f"{E}/50-x.conf": ("dir",), f"{L}/50-x.conf": "k.a = lib\n",
                                  f"{E}/60-y.conf": "k.b = 1\n"}, K3),
    Case("dangling-symlink-shadows", {f"{E}/50-x.conf": ("link", "/nonexistent/file"),
                                      f"{L}/50-x.conf": "k.a = lib\n", f"{E}/60-y.conf": "k.b = 1\n"}, K3),
    Case("symlink-to-other-file", {f"{E}/50-x.conf": ("link", "../../usr/lib/sysctl.d/other"),
                                   f"{L}/other": "k.a = via-link\n"}, K3),
    # --- /etc/sysctl.conf
    Case("sysctl-conf-without-link", {CONF: "k.a = conf\n", f"{E}/50-x.conf": "k.b = 1\n"}, K3,
         why="systemd never reads /etc/sysctl.conf itself"),
    Case("sysctl-conf-with-debian-link", {CONF: "k.a = conf\n", f"{E}/99-sysctl.conf": ("link", "../sysctl.conf")},
         K3),
    Case("sysctl-conf-last-in-procps",
         {CONF: "k.a = conf\n", f"{E}/99-sysctl.conf": ("link", "../sysctl.conf"), f"{E}/zz-late.conf": "k.a = zz\n"},
         K3, why="systemd: zz-late.conf sorts after 99-sysctl.conf; procps: sysctl.conf is read again, last"),
    # --- globs, explicit settings, exclusions
    Case("glob-then-explicit-later", {f"{E}/10-g.conf": "k.*.v = glob\n", f"{E}/20-e.conf": "k.a.v = explicit\n"},
         IFACES),
    Case("explicit-then-glob-later", {f"{E}/10-e.conf": "k.a.v = explicit\n", f"{E}/20-g.conf": "k.*.v = glob\n"},
         IFACES, why="a glob never overwrites a key with its own line, even an earlier one"),
    Case("exclusion-after-glob", {f"{E}/10-g.conf": "k.*.v = glob\n", f"{E}/20-x.conf": "-k.b.v\n"}, IFACES),
    Case("exclusion-before-glob", {f"{E}/10-x.conf": "-k.b.v\n", f"{E}/20-g.conf": "k.*.v = glob\n"}, IFACES),
    Case("exclusion-cancels-explicit", {f"{E}/10-e.conf": "k.a = 1\nk.b = 2\n", f"{E}/20-x.conf": "-k.a\n"}, K3,
         why="systemd: a later -key replaces the assignment in its map, so nothing is written"),
    Case("explicit-after-exclusion", {f"{E}/10-x.conf": "-k.a\n", f"{E}/20-e.conf": "k.a = 2\n"}, K3),
    Case("two-globs-overlap", {f"{E}/10.conf": "k.*.v = star\nk.a.* = a-star\n"}, IFACES),
    Case("glob-repeat-same-value-keeps-place", {f"{E}/10.conf": "k.*.v = 1\nk.a.* = 2\nk.*.v = 1\n"}, IFACES,
         why="systemd keeps a repeated identical line in its first place; procps writes it again"),
    Case("glob-repeat-new-value-moves", {f"{E}/10.conf": "k.*.v = 1\nk.a.* = 2\nk.*.v = 9\n"}, IFACES),
    Case("glob-brackets-and-question", {f"{E}/10.conf": "k.[ab].v = br\nk.?.w = q\nk.[!a].v = neg\n"}, IFACES),
    Case("glob-no-match", {f"{E}/10.conf": "k.zz*.v = 1\nk.a.v = 2\n"}, IFACES),
    Case("glob-matches-directory", {f"{E}/10.conf": "k.* = 1\n"}, ["k/a", "k/d/", "k/d/x"]),
    Case("glob-excluded-via-slash-form", {f"{E}/10.conf": "net.ipv4.conf.*.rp_filter = 2\n"
                                                          "-net/ipv4/conf/eth0.100/rp_filter\n"}, VLAN),
    Case("glob-braces", {f"{E}/10.conf": "k.{a,c}.v* = br\n"}, IFACES,
         why="systemd globs with GLOB_BRACE; procps' glob() gets no flags, so braces are literal"),
    Case("glob-exclusion-is-literal", {f"{E}/10.conf": "k.*.v = 1\n-k.a.*\n"}, IFACES,
         why="an exclusion is compared as a literal key, so '-k.a.*' excludes nothing"),
    Case("glob-escaped-star", {f"{E}/10.conf": "k.\\*.v = 1\nk.?.w = 2\n"}, IFACES + ["k/*/v"]),
    Case("dash-alone", {f"{E}/10.conf": "-\n-\t\nk.a = 1\n"}, K3),
    # --- keys: dots, slashes, VLANs
    Case("vlan-dotted-with-slash", {f"{E}/10.conf": "net.ipv4.conf.eth0/100.rp_filter = 1\n"}, VLAN),
    Case("vlan-slash-form", {f"{E}/10.conf": "net/ipv4/conf/eth0.200/rp_filter = 1\n"}, VLAN),
    Case("vlan-glob", {f"{E}/10.conf": "net.ipv4.conf.eth0/*.rp_filter = 3\n"}, VLAN),
    Case("same-key-dotted-then-slash", {f"{E}/10.conf": "k.a.v = dotted\n", f"{E}/20.conf": "k/a/v = slash\n"},
         IFACES),
    Case("trailing-dot-key", {f"{E}/10.conf": "k.a. = 1\nk.b = 2\n"}, K3,
         why="systemd simplifies the trailing slash away; procps stats k/a/ and fails"),
    Case("double-dot-key", {f"{E}/10.conf": "k..a = 1\n"}, K3),
    Case("leading-slash-key", {f"{E}/10.conf": "/k/a = 1\n"}, K3),
    Case("dash-space-key", {f"{E}/10.conf": "- k.a = 1\n"}, K3,
         why="systemd strips the space after '-'; procps keeps it and misses the key"),
    Case("double-dash-key", {f"{E}/10.conf": "--k.a = 1\n"}, K3),
    Case("missing-key-and-dash", {f"{E}/10.conf": "k.missing = 1\n-k.gone = 2\nk.a = 3\n-k.b = 4\n"}, K3),
    Case("bom-first-line", {f"{E}/10.conf": b"\xef\xbb\xbfk.a = 1\nk.b = 2\n"}, K3,
         why="a UTF-8 BOM becomes part of the first key"),
    # --- lines and bytes
    Case("crlf", {f"{E}/10.conf": b"k.a = 1\r\nk.b = two words\r\n# c\r\n"}, K3),
    Case("cr-only", {f"{E}/10.conf": b"k.a = 1\rk.b = 2\r"}, K3,
         why="systemd ends lines at \\r; procps only at \\n"),
    Case("nul-in-line", {f"{E}/10.conf": b"k.a = 1\x00k.b = 2\nk.c = 3\n"}, K3),
    Case("non-utf8-value", {f"{E}/10.conf": b"k.a = \xff\xfe caf\xe9\n"}, K3),
    Case("non-utf8-key", {f"{E}/10.conf": b"k.\xff = 1\nk.b = 2\n"}, K3),
    Case("binary-garbage", {f"{E}/10.conf": bytes(range(256)) * 4 + b"\nk.a = 1\n"}, K3),
    Case("very-long-line", {f"{E}/10.conf": b"k.a = 1\nk.c = " + b"x" * (1024 * 1024 + 10) + b"\nk.b = 2\n"}, K3,
         why="systemd stops reading a file at a line of 1 MiB or more"),
    Case("long-value", {f"{E}/10.conf": "k.a = " + "1234567 " * 600 + "\n"}, K3),
    Case("no-equals", {f"{E}/10.conf": "k.a 1\nk.b = 2\nx\n"}, K3),
    Case("empty-value", {f"{E}/10.conf": "k.a =\nk.b = \t\n"}, K3),
    Case("inner-spaces-and-equals", {f"{E}/10.conf": "k.a = 4096 87380   6291456\nk.b = a=b = c\n"}, K3),
    Case("whitespace-and-tabs", {f"{E}/10.conf": "\t  k.a\t =\t 1 \t\n   k.b=2\n"}, K3),
    Case("comments", {f"{E}/10.conf": "# k.a = 1\n; k.b = 2\n   # k.c = 3\nk.c = 4 # not a comment\n"}, K3),
    Case("equals-first", {f"{E}/10.conf": "=1\n = 2\nk.a = 3\n"}, K3),
    Case("one-char-lines", {f"{E}/10.conf": "a=1\nb\n\nk.a=5"}, ["a", "b"] + K3),
    Case("no-trailing-newline", {f"{E}/10.conf": "k.a = 1\nk.b = 2"}, K3),
    # --- duplicates
    Case("duplicate-moves-to-end", {f"{E}/10.conf": "k.a = 1\nk.b = 2\nk.a = 3\n"}, K3),
    Case("duplicate-same-value-dash", {f"{E}/10.conf": "k.a = 1\n-k.a = 1\n-k.missing = 1\n"}, K3),
    Case("duplicate-across-files", {f"{L}/10.conf": "k.a = 1\n", f"{E}/20.conf": "k.a = 2\n",
                                    f"{R}/30.conf": "k.a = 1\n"}, K3),
    # --- systemd --prefix (the udev rule's invocation)
    Case("prefix-filters", {f"{E}/10.conf": "k.a.v = 1\nk.b.v = 2\nj.x = 3\nk.*.w = 4\n"},
         IFACES + ["j/x"], flavors=("systemd",), args=["--prefix=/k/a"]),
    Case("prefix-dotted", {f"{E}/10.conf": "net.ipv4.conf.*.rp_filter = 2\nnet.ipv4.conf.all.rp_filter = 1\n"},
         VLAN, flavors=("systemd",), args=["--prefix=net.ipv4.conf.eth0/100"]),
]
