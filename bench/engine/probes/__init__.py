"""Probes: context managers that measure one step and always restore what they changed."""
