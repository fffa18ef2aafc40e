"""`schema.graphql` is the committed contract: it must match the code."""

from __future__ import annotations

from pathlib import Path

from schema import export_schema

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_schema_matches_the_code() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_schema(), "schema.graphql is out of date: run `make schema` and commit it"
