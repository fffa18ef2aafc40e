"""Typed domain errors. `schema/` maps each to a member of a payload's error union."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal the caller can act on; its message is safe to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # What to tell the patient anyway (e.g. crisis resources when their words called for
        # them, even though the write itself was refused).
        self.advice: dict[str, str] = {}


class NotFound(DomainError):
    """The record does not exist, or the viewer may not see it: the two look the same."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource


class Forbidden(DomainError):
    """The viewer's role may not do this at all (not about one record: that is `NotFound`);
    `argument` names the argument it may not use, when that is what is refused."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class InvalidInput(DomainError):
    """One input field is wrong; `field` names it as the client sent it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Conflict(DomainError):
    """The write would break a uniqueness rule (e.g. an e-mail already registered)."""
