"""Errors raised by the reference implementation."""


class AutoDistError(ValueError):
    """Bad input to the reference implementation: the message names what is wrong."""


class TransformError(AutoDistError):
    """The original graph cannot be turned into a distributed one (message says why)."""
