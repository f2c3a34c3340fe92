"""What a caller of the `recommend` ensemble can catch: one exception per thing to do about it.

    try:
        client.recommend(items)
    except InvalidRequest:     # fix the request (empty session, K out of range, too many items)
    except ModelNotReady:      # the server is up but `recommend` is not loaded (retried while it loads)
    except DeadlineExceeded:   # no answer within the call's deadline (retries included)
    except ServerUnavailable:  # no server reachable, after retries
    except Overloaded:         # RESOURCE_EXHAUSTED, after retries
    except BadResponse:        # the server answered something that breaks the tensor contract

All are `RecommendError`, a `SessionrecError`: the CLI prints them as one line. `code` keeps the gRPC
status name, `retryable` says whether the client's retry policy may repeat the call.
"""

from __future__ import annotations

from sessionrec.errors import SessionrecError

# gRPC status codes that are safe to retry for an idempotent call: the request was not processed
# (UNAVAILABLE: no connection, server stopping) or was refused for load (RESOURCE_EXHAUSTED).
# Never INVALID_ARGUMENT (the same request fails again) nor DEADLINE_EXCEEDED (the budget is spent).
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
# tritonserver answers NOT_FOUND "Request for unknown model: 'recommend' has no available versions"
# while a model is being (re)loaded and while a stopping server (SIGTERM: a pod being replaced)
# unloads its models before closing the port. That is UNAVAILABLE in all but the code, so it is retried
# as UNAVAILABLE; NOT_FOUND "... is not found" (no such model: a typo) is not.
_LOADING = "has no available versions"


class RecommendError(SessionrecError):
    """A `recommend` call failed; `code` is the gRPC status name (None for client-side problems)."""

    def __init__(self, message: str, code: str | None = None, attempts: int = 1, retryable: bool | None = None):
        super().__init__(message)
        self.code = code
        self.attempts = attempts
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable


class InvalidRequest(RecommendError, ValueError):
    """The server refused the request itself (INVALID_ARGUMENT): retrying cannot help."""


class ModelNotReady(RecommendError):
    """The server answers but the model is not loaded or has no ready version (NOT_FOUND)."""


class DeadlineExceeded(RecommendError, TimeoutError):
    """No answer within the call's deadline."""


class ServerUnavailable(RecommendError, ConnectionError):
    """The server could not be reached (UNAVAILABLE), even after retrying."""


class Overloaded(RecommendError):
    """The server refused for load (RESOURCE_EXHAUSTED), even after retrying."""


class BadResponse(RecommendError):
    """The answer breaks the tensor contract (missing output, mismatched shapes, too many items)."""


_BY_CODE = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "NOT_FOUND": ModelNotReady,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAVAILABLE": ServerUnavailable,
    "RESOURCE_EXHAUSTED": Overloaded,
}

_WHAT = {
    InvalidRequest: "invalid request",
    ModelNotReady: "model not ready",
    DeadlineExceeded: "deadline exceeded",
    ServerUnavailable: "server unavailable",
    Overloaded: "server overloaded",
}


def status_name(exc: BaseException) -> str | None:
    """'UNAVAILABLE' from a tritonclient InferenceServerException (status 'StatusCode.UNAVAILABLE')."""
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    if not status:
        return None
    return str(status).rsplit(".", 1)[-1]


def retry_code(exc: BaseException) -> str | None:
    """The status code a retry decision should see: Triton's "model (re)loading" NOT_FOUND counts as UNAVAILABLE."""
    code = status_name(exc)
    if code == "NOT_FOUND" and _LOADING in (exc.message() if callable(getattr(exc, "message", None)) else str(exc)):
        return "UNAVAILABLE"
    return code


def from_server_error(exc: BaseException, url: str, model: str, timeout: float | None = None,
                      attempts: int = 1) -> RecommendError:
    """Turn a tritonclient exception into the matching RecommendError with a message to act on."""
    code = status_name(exc)
    detail = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    detail = (detail or "").strip() or str(exc)
    cls = _BY_CODE.get(code, RecommendError)
    what = _WHAT.get(cls, f"request failed ({code or 'client error'})")
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if cls is DeadlineExceeded and timeout is not None:
        message = f"{url} model {model!r}: {what}: no answer within {timeout:g} s{tries}"
    elif cls is ModelNotReady:
        message = f"{url} model {model!r}: {what} (is it loaded? `sessionrec serve` loads it): {detail}"
    else:
        message = f"{url} model {model!r}: {what}{tries}: {detail}"
    return cls(message, code=code, attempts=attempts, retryable=retry_code(exc) in RETRYABLE_CODES)
