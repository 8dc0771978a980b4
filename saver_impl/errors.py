"""Errors raised by the reference implementation."""


class AutoDistError(ValueError):
    """Bad input to the reference implementation: the message names what is wrong."""


class TransformError(AutoDistError):
    """The original graph cannot be turned into a distributed one (message says why)."""


class UnsupportedGraph(TransformError, NotImplementedError):
    """The original graph uses a feature the reference implementation declines (TF1
    reference variables): a ``NotImplementedError``, as the suite's interface asks of
    an optional feature an implementation does not support."""
