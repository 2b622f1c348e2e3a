"""`verify`: boot a root under qemu and hold `check`'s prediction against what the kernel shows.

One implementation for the command and the slow tier (tests/slow):

  image.py     a temporary ext4 disk made by `mke2fs -d` from a copy of the root plus injected files
               (the root itself is never changed); the root's own kernel and initrd
  reporter.py  the script, systemd unit / rc script the guest runs once boot has settled: every key's
               existence and value, loaded modules, journal lines; the --late-load modules; again
  qemu.py      the boot: serial console only, a hard timeout, teardown on Ctrl-C/SIGTERM, KVM only when a
               bounded probe shows it really runs a kernel (TCG otherwise)
  serial.py    the marker-line plumbing every probe on a second serial port shares
  compare.py   predicted (check's JSON for the same root, and its verdicts) vs observed, per key and phase
  run.py       the whole job: predict, build, boot N times, compare -> VerifyResult
  render.py    text and JSON of a VerifyResult (pure)
"""
