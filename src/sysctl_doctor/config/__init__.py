"""What the administrator configured: sysctl.d as systemd-sysctl and procps read it."""
