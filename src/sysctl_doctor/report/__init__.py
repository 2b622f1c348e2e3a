"""Renderers for `check`: they turn a `CheckReport` into text or JSON and compute nothing."""
