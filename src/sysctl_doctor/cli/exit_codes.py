"""The exit statuses every command uses (README "Exit codes"); commands raise `click.exceptions.Exit(code)`
and `sysctl_doctor.cli.main` is the one place that exits."""

EXIT_OK = 0
EXIT_FINDINGS = 1  # findings at error level; an INVALID packet (conntrack logs/replay); a lab run off its prediction
EXIT_ERROR = 2
EXIT_BOOT_FAILED = 2  # verify: the boot itself failed (no power-off, no complete report); the console tail says why
EXIT_INTERRUPTED = 130
