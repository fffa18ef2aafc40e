"""What an operation may cost to answer, counted before it runs, and the limit on it.

Depth and alias limits do not bound the work: `patients(first: 100) { edges { node { careTeam {
patients(first: 100) { edges { node { careTeam { patients(first: 100) … } } } } } } } }` is well
within the depth limit and asks for a million patients. The cost of an operation is the number of
objects its answer may hold:

- a field of an object type counts once for every object it may return, and what is selected under
  it is counted once per such object;
- a connection's page (its `edges`) holds `first` objects (the default page size when `first` is
  absent or null, the maximum page size at most), whether `first` is written in the document or
  passed as a variable;
- any other list of objects is counted at the default page size;
- scalars and introspection count nothing; an alias or fragment counts every time it is selected.

So nested lists multiply and aliases add up, as they do for the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension

# Well above what the apps, the portal and the examples in README and docs/ ask for (the panel of 100 patients
# with its outcomes costs about 600, 100 threads of 20 messages about 2,500); below one connection
# of 100 nested in another (about 20,000).
DEFAULT_MAX_QUERY_COST = 10_000


class _Counter:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
        *,
        default_page_size: int,
        max_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.defaults: dict[str, ValueNode | None] = {
            d.variable.name.value: d.default_value for d in operation.variable_definitions or ()
        }
        self.variables = variables
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        # A fragment selected in many places is counted once per (selection, type, page): the
        # count takes time in the size of the document, not of the answer.
        self.memo: dict[tuple[int, str, int | None], int] = {}

    def selections(self, selection_set: SelectionSetNode, parent: GraphQLNamedType, page: int | None) -> int:
        """Objects under one object of type `parent`; `page` is the length of its lists (a
        connection's edges) when the field that returned it had a `first`."""
        key = (id(selection_set), parent.name, page)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = 0  # validation refuses fragment cycles; this keeps a count from looping anyway
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, page)
            elif isinstance(selection, InlineFragmentNode):
                total += self.selections(
                    selection.selection_set, self.condition(selection.type_condition, parent), page
                )
            elif (
                isinstance(selection, FragmentSpreadNode)
                and (fragment := self.fragments.get(selection.name.value)) is not None
            ):
                total += self.selections(fragment.selection_set, self.condition(fragment.type_condition, parent), page)
        self.memo[key] = total
        return total

    def condition(self, condition: NamedTypeNode | None, parent: GraphQLNamedType) -> GraphQLNamedType:
        found = self.schema.get_type(condition.name.value) if condition is not None else None
        return found or parent

    def field(self, node: FieldNode, parent: GraphQLNamedType, page: int | None) -> int:
        if node.selection_set is None or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0  # a scalar, or a union's `__typename`
        definition = parent.fields.get(node.name.value)
        if definition is None:
            return 0  # introspection (`__schema`, `__type`) is not the clinic's data
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        objects = (page if page is not None else self.default_page_size) if isinstance(field_type, GraphQLList) else 1
        inner_page = self.first(node) if "first" in definition.args else None
        return objects * (1 + self.selections(node.selection_set, get_named_type(field_type), inner_page))

    def first(self, node: FieldNode) -> int:
        """The page a connection field asks for, as `schema.pagination.page_size` will read it."""
        value: object = None
        for argument in node.arguments or ():
            if argument.name.value == "first":
                value = self.value(argument.value)
        if value is None:
            return min(self.default_page_size, self.max_page_size)
        if not isinstance(value, int) or isinstance(value, bool):
            return self.max_page_size  # refused when it runs; counted at the most it could be
        return max(0, min(value, self.max_page_size))

    def value(self, node: ValueNode | None) -> object:
        if isinstance(node, VariableNode):
            name = node.name.value
            return self.variables[name] if name in self.variables else self.value(self.defaults.get(name))
        if isinstance(node, IntValueNode):
            return int(node.value)
        return None if node is None or node.kind == "null_value" else self.max_page_size


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    *,
    default_page_size: int,
    max_page_size: int,
) -> int:
    """The most objects the answer of the operation `operation_name` may hold (0 if none runs)."""
    operation = get_operation_ast(document, operation_name)
    root = schema.get_root_type(operation.operation) if operation is not None else None
    if operation is None or root is None:
        return 0
    counter = _Counter(
        schema,
        document,
        operation,
        variables or {},
        default_page_size=default_page_size,
        max_page_size=max_page_size,
    )
    return counter.selections(operation.selection_set, root, None)


class QueryCostLimit(SchemaExtension):
    """Refuses, before anything runs, an operation whose answer may hold more than `limit` objects:
    `QUERY_TOO_COSTLY`, with the `cost` and the `limit` in `extensions`."""

    def __init__(self, *, limit: int, default_page_size: int, max_page_size: int) -> None:
        self.limit = limit
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            cost = operation_cost(
                context.schema._schema,
                context.graphql_document,
                context.operation_name,
                context.variables,
                default_page_size=self.default_page_size,
                max_page_size=self.max_page_size,
            )
            if cost > self.limit:
                raise GraphQLError(
                    f"the query may return {cost} objects, more than the limit of {self.limit}: "
                    "ask for smaller pages (first) or nest fewer lists",
                    extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": self.limit},
                )
        yield
