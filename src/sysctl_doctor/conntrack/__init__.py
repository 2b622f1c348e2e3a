"""Conntrack diagnosis: kernel log lines, the TCP window model, replay of captures, live counters."""
