"""One root error for the scanner, and one subclass per pipeline stage."""
from __future__ import annotations


class ScannerError(Exception):
    """Root of every error the scanner raises on purpose."""


class ConfigError(ScannerError, ValueError):
    """Raised when the function's environment holds a missing or malformed setting."""


class EventError(ScannerError, ValueError):
    """Raised when an invocation event has an unknown field or a field of the wrong type or form."""


class DiscoveryError(ScannerError):
    """Raised when accounts, Regions or clusters cannot be listed, or a target account cannot be entered."""


class ClusterReadError(ScannerError):
    """Raised when a cluster's namespaces or policies cannot be read completely; never a partial result."""


class PublishError(ScannerError):
    """Raised when a run's report or state cannot be written to S3."""


class WriteConflict(PublishError):
    """Raised when a conditional S3 write loses: the object changed since it was read, or already exists."""


class ForbiddenError(ClusterReadError):
    """Raised when RBAC denies a read (403): for an optional policy kind the scan goes on and says so."""


class PolicyError(ScannerError, ValueError):
    """Raised when a policy object cannot be interpreted (a malformed selector or rule)."""
