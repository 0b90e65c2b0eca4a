"""Errors for users: every one subclasses :class:`VisionMTLError`, so a command line catches one type.

Messages name the file, key or id at fault and say what to change; library code raises them and
``tools/`` prints them as one line with exit code 2.
"""

from __future__ import annotations


class VisionMTLError(Exception):
    """Base class of the errors that describe bad input or a run that cannot go on, not bugs."""


class ConfigError(VisionMTLError, ValueError):
    """A config file, dict or override is invalid; the message names the source and the key."""
