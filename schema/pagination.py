"""Relay-style connections with opaque, tamper-evident-enough cursors.

A cursor is base64url JSON tagged with the list it belongs to; a cursor from another list, or
garbage, is refused with a clear error instead of silently restarting from the top.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Generic, TypeVar

import strawberry

from schema.errors import BadUserInput

NodeType = TypeVar("NodeType")
DEFAULT_PAGE_SIZE = 20


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str
    node: NodeType


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo

    @classmethod
    def build(
        cls, nodes: list[NodeType], cursors: list[str], *, has_next_page: bool, after: str | None
    ) -> Connection[NodeType]:
        edges = [Edge(cursor=cursor, node=node) for node, cursor in zip(nodes, cursors, strict=True)]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next_page,
                has_previous_page=after is not None,
                start_cursor=cursors[0] if cursors else None,
                end_cursor=cursors[-1] if cursors else None,
            ),
        )


def page_size(first: int | None, maximum: int) -> int:
    if first is None:
        return min(DEFAULT_PAGE_SIZE, maximum)
    if not 1 <= first <= maximum:
        raise BadUserInput(f"first must be between 1 and {maximum}")
    return first


def encode_cursor(kind: str, values: list[str]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR_LENGTH = 512


def decode_cursor(kind: str, cursor: str, length: int) -> list[str]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadUserInput("after is not a cursor this list issued")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BadUserInput("after is not a cursor this list issued") from error
    if (
        not isinstance(decoded, list)
        or len(decoded) != length + 1
        or decoded[0] != kind
        or not all(isinstance(value, str) for value in decoded)
    ):
        raise BadUserInput("after is not a cursor this list issued")
    return decoded[1:]
