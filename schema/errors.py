"""The error model of the API.

Two kinds of error reach a client:
- expected refusals of a mutation are members of its payload's `result` union, all implementing
  `Error` (PRODUCT.md), built from a domain error by `error_type_for`;
- request-level refusals (not signed in, not allowed) are GraphQL errors raised as `ClientError`,
  shown as they are, with `extensions.code`.
Anything else is unexpected and masked (see `schema.extensions.ErrorPolicy`).
"""

from __future__ import annotations

import strawberry

from models import errors as domain


class ClientError(Exception):
    """A request-level refusal whose message is safe to show; `code` goes to `extensions.code`."""

    code = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ClientError):
    code = "UNAUTHENTICATED"


class Forbidden(ClientError):
    code = "FORBIDDEN"


class RecordNotFound(ClientError):
    """Does not exist, or is not yours: the two are deliberately the same answer."""

    code = "NOT_FOUND"


class BadUserInput(ClientError):
    code = "BAD_USER_INPUT"


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


ERROR_TYPES: tuple[type, ...] = (ValidationError, NotFound, Conflict, IdempotencyConflict)


def error_type_for(error: domain.DomainError) -> Error:
    """The payload error member that tells the client what a domain refusal means."""
    if isinstance(error, domain.InvalidInput):
        return ValidationError(message=error.message, field=error.field)
    if isinstance(error, domain.NotFound):
        return NotFound(message=error.message)
    if isinstance(error, domain.Conflict):
        return Conflict(message=error.message)
    return ValidationError(message=error.message, field=None)
