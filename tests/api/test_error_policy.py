"""Unexpected errors are masked (logged with the request id); expected ones are shown as they are."""

from __future__ import annotations

import logging
from enum import Enum

import pytest
import strawberry

from models.kernel.clock import SystemClock
from schema.context import Context
from schema.errors import Forbidden
from schema.extensions import protections
from schema.pagination import CursorCodec


@strawberry.type
class FailingQuery:
    @strawberry.field
    def broken(self) -> str:
        raise RuntimeError("connection to 10.0.0.5 failed for patient Alex Morgan")

    @strawberry.field
    def refused(self) -> str:
        raise Forbidden("you may not see this record")


def _schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=FailingQuery,
        extensions=protections(
            max_depth=5, max_aliases=5, max_tokens=500, max_cost=1000, max_page_size=100, introspection=False
        ),
    )


def _context() -> Context:
    return Context(
        clock=SystemClock(), request_id="req-12345678", max_page_size=100, cursors=CursorCodec(["a test secret"])
    )


async def test_an_unexpected_error_is_masked_and_logged_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="ketafollow.graphql"):
        result = await _schema().execute("{ broken }", context_value=_context())
    assert result.errors is not None
    [error] = result.errors
    assert error.message == "Unexpected error. Reference: req-12345678"
    assert "Alex" not in error.message and "10.0.0.5" not in error.message
    assert error.extensions == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-12345678"}
    assert any(record.exc_info for record in caplog.records)


async def test_an_expected_refusal_is_shown_with_its_code() -> None:
    result = await _schema().execute("{ refused }", context_value=_context())
    assert result.errors is not None
    [error] = result.errors
    assert error.message == "you may not see this record"
    assert error.extensions == {"code": "FORBIDDEN"}


@strawberry.enum
class Colour(Enum):
    RED = "RED"


@strawberry.type
class EnumQuery:
    @strawberry.field
    def paint(self, colour: Colour) -> str:
        return colour.value


async def test_a_variable_outside_its_enum_is_shown_as_the_clients_mistake_not_masked() -> None:
    schema = strawberry.Schema(
        query=EnumQuery,
        extensions=protections(
            max_depth=5, max_aliases=5, max_tokens=500, max_cost=1000, max_page_size=100, introspection=False
        ),
    )
    result = await schema.execute(
        "query($c: Colour!) { paint(colour: $c) }", variable_values={"c": "BLUE"}, context_value=_context()
    )
    assert result.errors is not None
    [error] = result.errors
    assert "Value 'BLUE' does not exist in 'Colour' enum" in error.message
    assert error.extensions is None or error.extensions.get("code") != "INTERNAL_SERVER_ERROR"
