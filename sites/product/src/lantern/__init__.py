"""Lantern: pre-flight checks for built static sites."""

__version__ = "0.4.1"
