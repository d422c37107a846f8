"""Errors a user can meet. Each carries a one-line message that says what to do; the CLI prints it
without a traceback."""


class RidestreamError(Exception):
    """Base for errors shown to users as one line."""


class ConfigError(RidestreamError):
    """The configuration (environment, .env, flags) is invalid."""


class BrokerUnavailable(RidestreamError):
    """No Kafka broker answered at the configured bootstrap address."""


class TopicError(RidestreamError):
    """A topic could not be created or described."""


class DataError(RidestreamError):
    """A data file is missing or is not what it should be (e.g. not a TLC trip file)."""


class AccessDenied(RidestreamError):
    """The cluster refused the configured principal: a wrong password, or an ACL it lacks."""
