"""What a GraphQL request costs against its rate limit: one token per root field it runs.

Aliases make one document run the same field many times (`a: me b: me c: me`), so the cost is
the number of distinct response keys at the root of the operation that runs, fragments
included. Fields GraphQL merges (`{ me me }`, one key) run once and cost once.
"""

from __future__ import annotations

from functools import lru_cache

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)


def root_field_count(document: DocumentNode, operation_name: str | None) -> int:
    """Distinct root response keys of the operation `operation_name` selects (0 if none)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == operation_name]
    if len(operations) != 1:
        return 0  # GraphQL refuses the request: nothing runs
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    keys: set[str] = set()
    _collect(operations[0].selection_set, fragments, keys, visited=set())
    return len(keys)


def _collect(
    selections: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], keys: set[str], visited: set[str]
) -> None:
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            keys.add((selection.alias or selection.name).value)
        elif isinstance(selection, InlineFragmentNode):
            _collect(selection.selection_set, fragments, keys, visited)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in visited:  # a fragment cycle is refused by validation
                visited.add(name)
                _collect(fragments[name].selection_set, fragments, keys, visited)


@lru_cache(maxsize=256)
def request_cost(query: str, operation_name: str | None, max_tokens: int) -> int:
    """Tokens a request spends: its root fields, and at least one (a document GraphQL refuses
    still costs the work of refusing it). Cached: apps send the same few documents again and again."""
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return 1
    return max(1, root_field_count(document, operation_name))
