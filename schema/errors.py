"""The error model of the API.

Two kinds of error reach a client:
- expected refusals of a mutation are members of its payload's `result` union, all implementing
  `Error` (PRODUCT.md), built from a domain error by `error_type_for`;
- request-level refusals (not signed in, not allowed) are GraphQL errors raised as `ClientError`,
  shown as they are, with `extensions.code`.
Anything else is unexpected and masked (see `schema.extensions.ErrorPolicy`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import strawberry

from models.kernel import errors as domain
from models.kernel.idempotency import IdempotencyConflict as IdempotencyRefusal
from models.kernel.idempotency import StoredRefusal


class ClientError(Exception):
    """A request-level refusal whose message is safe to show; `code` goes to `extensions.code`."""

    code = "BAD_REQUEST"

    def __init__(self, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.message = message
        # Shown beside `code` in `extensions` (e.g. the argument a refusal is about).
        self.extensions = extensions


class Unauthenticated(ClientError):
    code = "UNAUTHENTICATED"


class Forbidden(ClientError):
    code = "FORBIDDEN"


class RecordNotFound(ClientError):
    """Does not exist, or is not yours: the two are deliberately the same answer."""

    code = "NOT_FOUND"


class BadUserInput(ClientError):
    code = "BAD_USER_INPUT"


class RateLimited(ClientError):
    """The viewer spent its rate-limit budget (api.rate_limit); the message says when to retry."""

    code = "RATE_LIMITED"


@contextmanager
def refusals_as_errors() -> Iterator[None]:
    """For reads: a domain refusal becomes the request-level error of the same meaning."""
    try:
        yield
    except domain.NotFound as error:
        raise RecordNotFound(error.message) from error
    except domain.Forbidden as error:
        raise Forbidden(error.message, **({"argument": error.argument} if error.argument else {})) from error
    except domain.InvalidInput as error:
        raise BadUserInput(error.message) from error


@strawberry.interface(name="Error")
class Error:
    message: str


@strawberry.type(name="ValidationError")
class ValidationError(Error):
    field: str | None


@strawberry.type(name="NotFound")
class NotFound(Error):
    pass


@strawberry.type(name="Conflict")
class Conflict(Error):
    pass


@strawberry.type(name="IdempotencyConflict")
class IdempotencyConflict(Error):
    pass


@strawberry.type(name="FailedCheck")
class FailedCheck:
    code: str = strawberry.field(description="A code of CLINICAL.md section 2, e.g. BP_ABOVE_CEILING.")
    message: str = strawberry.field(description="What to tell the patient.")
    item: str | None = strawberry.field(description="The checklist item answered yes (CONTRAINDICATION).")


@strawberry.type(name="SafetyCheckFailed")
class SafetyCheckFailed(Error):
    failed_checks: list[FailedCheck]


ERROR_TYPES: tuple[type, ...] = (ValidationError, NotFound, Conflict, IdempotencyConflict, SafetyCheckFailed)


def error_type_for(error: domain.DomainError) -> Error:
    """The payload error member that tells the client what a domain refusal means."""
    if isinstance(error, domain.InvalidInput):
        return ValidationError(message=error.message, field=error.field)
    if isinstance(error, domain.NotFound):
        return NotFound(message=error.message)
    if isinstance(error, domain.Conflict):
        return Conflict(message=error.message)
    if isinstance(error, IdempotencyRefusal):
        return IdempotencyConflict(message=error.message)
    if isinstance(error, StoredRefusal) and error.kind == "SafetyCheckFailed":
        checks = [
            FailedCheck(code=c["code"], message=c["message"], item=c.get("item")) for c in error.details["failedChecks"]
        ]
        return SafetyCheckFailed(message=error.message, failed_checks=checks)
    return ValidationError(message=error.message, field=None)


def advice_of(error: domain.DomainError) -> dict[str, Any]:
    """Advice a refusal carries for the patient (e.g. crisis resources after a checklist answer)."""
    if isinstance(error, StoredRefusal):
        return {**error.details.get("advice", {}), **error.advice}
    return dict(error.advice)
