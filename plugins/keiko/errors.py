"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class KeikoError(Exception):
    """A mistake the user can fix (bad input, missing data, unknown model), said in one line.

    `retryable`: the cause is outside the user's input (InfrastructureError, or an error that wraps one), so the
    step exits with keiko.process.EXIT_RETRYABLE and Airflow retries it."""

    retryable = False


class ModelConfigError(KeikoError):
    """A model's model.yaml is missing or invalid."""


class MissingDataError(KeikoError):
    """A warehouse partition or an upstream artifact does not exist."""


class RegistryError(KeikoError):
    """The registry refused an operation (unknown version, bad alias move)."""


class InfrastructureError(KeikoError):
    """Something outside the user's input failed and may work on a retry: an unreachable model server, a lease
    held past the wait, an Athena query that failed or timed out."""

    retryable = True


class LeaseHeld(RegistryError, InfrastructureError):
    """Another holder has the model's production lease; `lease` says who, since when, until when."""

    def __init__(self, message: str, lease) -> None:
        super().__init__(message)
        self.lease = lease


class LeaseLost(RegistryError):
    """The lease this process held expired or was taken: it must not change production any more."""


class GateFailed(KeikoError):
    """At least one expectation failed: deterministic, so the gate task is not retried."""


class StageSkipped(Exception):
    """The stage decided, correctly, to do nothing: the Airflow task shows as skipped, not failed."""
