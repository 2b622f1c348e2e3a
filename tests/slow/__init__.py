"""The slow tier: real boots of Debian roots under qemu (opt-in: pytest --run-slow)."""
