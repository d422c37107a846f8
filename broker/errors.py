"""The broker package's one error type (re-exported by :mod:`broker.local`)."""


class BrokerError(RuntimeError):
    """A one-line, actionable reason why the local broker cannot do what was asked."""
