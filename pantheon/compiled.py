"""Hot reads whose SQL is compiled once per process.

Django builds and compiles a queryset's SQL afresh on every call: its filters, its joins, its
select list, quoted name by name. For the reads every turn makes (the caller's token, the
session with its turn state) that was about 5 % of a turn's CPU (py-spy), more than running
them. A `CompiledRead` builds its queryset once, compiles it on its first call, and then runs
the same SQL with each call's values, building the rows' model instances as the queryset would
(its `select_related` objects and annotations included).

Only the values named as parameters change from one call to the next: the rest of the
queryset is fixed when it is first compiled. A queryset that would put any other value of its
own in the SQL's parameters (a time read at build time, say) is refused then.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import (  # type: ignore[attr-defined]
    ModelIterable,
    ValuesIterable,
    get_related_populators,
)

M = TypeVar("M", bound=Model)

KINDS = (int, str, uuid.UUID)
# How a backend may write a parameter of each kind in a query's parameters (None: as it is).
_WRITTEN: dict[type, tuple[Callable[[Any], Any] | None, ...]] = {
    int: (None,),
    str: (None,),
    uuid.UUID: (None, lambda value: value.hex),
}


def _sentinel(kind: type, number: int, pass_: int) -> Any:
    """A value of `kind` that no caller passes, one for each parameter (`number`) and each of
    the two compilations (`pass_`): compiled with each, only the parameters they fill may
    differ, and each tells which parameter it fills."""
    unique = 0x7340_0000 + 2 * number + pass_  # within a 32-bit integer column's range
    if kind is int:
        return unique
    if kind is str:
        return f"compiled-read-parameter-{unique}"
    return uuid.UUID(int=unique)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]  # the queryset's own values; None where a parameter goes
    # (position in params, parameter name, how the backend writes it: None as given)
    slots: tuple[tuple[int, str, Callable[[Any], Any] | None], ...]
    using: str
    converters: tuple[tuple[int, tuple[Callable, ...], Any], ...]  # (column, functions, expr)
    # A read of values(): its columns' names.
    names: tuple[str, ...] | None = None
    # A read of model instances: how the queryset builds them (`ModelIterable`).
    model: Any = Model  # its class (the stubs' type[Model] has no DoesNotExist)
    init_list: tuple[str, ...] = ()
    model_fields: slice | None = None
    populators: tuple[Any, ...] = ()
    annotations: tuple[tuple[str, int], ...] = ()


class CompiledRead(Generic[M]):
    """`build(**parameters)`'s queryset, compiled on its first call in each process.
    `parameters` name each parameter's type (int, str or UUID); a value of another type is
    converted to it (a UUID given as its text, say)."""

    def __init__(self, build: Callable[..., QuerySet[M]], **parameters: type) -> None:
        unknown = [kind for kind in parameters.values() if kind not in KINDS]
        if unknown:
            raise TypeError(f"no compiled parameters of type {unknown[0]!r}")
        self._build = build
        self._parameters = parameters
        self._compiled: _Compiled | None = None

    def get(self, **values: Any) -> M:
        """The one row, as `QuerySet.get` has it (DoesNotExist, MultipleObjectsReturned)."""
        found = self.all(**values)
        if len(found) == 1:
            return found[0]
        assert self._compiled is not None
        model = self._compiled.model
        name = model._meta.object_name
        if not found:
            raise model.DoesNotExist(f"{name} matching query does not exist.")
        raise model.MultipleObjectsReturned(
            f"get() returned more than one {name} -- it returned {len(found)}!"
        )

    def all(self, **values: Any) -> list[M]:
        """The rows, as model instances built as the queryset builds them."""
        compiled, rows = self._rows(values)
        if compiled.model_fields is None:
            raise TypeError("a read of values() is read with `values`")
        found: list[M] = []
        for row in rows:
            instance = compiled.model.from_db(
                compiled.using, compiled.init_list, row[compiled.model_fields]
            )
            for populator in compiled.populators:
                populator.populate(row, instance)
            for name, position in compiled.annotations:
                setattr(instance, name, row[position])
            found.append(instance)
        return found

    def values(self, **values: Any) -> list[dict[str, Any]]:
        """The rows of a `values()` queryset, as dictionaries."""
        compiled, rows = self._rows(values)
        if compiled.names is None:
            raise TypeError("a read of model instances is read with `all` or `get`")
        return [dict(zip(compiled.names, row, strict=True)) for row in rows]

    def _rows(self, values: Mapping[str, Any]) -> tuple[_Compiled, list[list[Any]]]:
        if values.keys() != self._parameters.keys():
            raise TypeError(f"expected the parameters {sorted(self._parameters)}")
        compiled = self._compiled or self._compile()
        params = list(compiled.params)
        for position, name, written in compiled.slots:
            kind = self._parameters[name]
            value = values[name]
            value = value if type(value) is kind else kind(value)
            params[position] = value if written is None else written(value)
        connection = connections[compiled.using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        rows = []
        for row in map(list, fetched):
            for position, functions, expression in compiled.converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, connection)
                row[position] = value
            rows.append(row)
        return compiled, rows

    def _compile(self) -> _Compiled:
        """The queryset's SQL, compiled twice with other sentinels for the parameters: the two
        may differ in the parameters the sentinels fill, and nowhere else."""
        sentinels = [
            {
                name: _sentinel(kind, number, pass_)
                for number, (name, kind) in enumerate(self._parameters.items())
            }
            for pass_ in (0, 1)
        ]
        (sql, params, compiler, using, iterable), (other_sql, other_params, *_) = (
            self._sql(values) for values in sentinels
        )
        if sql != other_sql or len(params) != len(other_params):
            raise ValueError("the queryset's SQL changes with its parameters' values")
        # Each sentinel as the backend may write it: as given, or (a UUID on SQLite, which has
        # no UUID type) as its hexadecimal text.
        filling = {
            written(value) if written else value: (name, written)
            for name, value in sentinels[0].items()
            for written in _WRITTEN[type(value)]
        }
        slots: dict[int, tuple[str, Callable[[Any], Any] | None]] = {}
        for position, (value, other) in enumerate(zip(params, other_params, strict=True)):
            if value == other:
                continue
            known = isinstance(value, KINDS) and value in filling
            if known:
                name, written = filling[value]
                other_sentinel = sentinels[1][name]
                known = (written(other_sentinel) if written else other_sentinel) == other
            if not known:
                raise ValueError(f"the queryset has a value of its own that changes: {value!r}")
            slots[position] = filling[value]
        missing = set(self._parameters) - {name for name, _ in slots.values()}
        if missing:
            raise ValueError(f"parameters not in the queryset's SQL: {sorted(missing)}")
        select, query = compiler.select, compiler.query
        fields = [column[0] for column in select[: compiler.col_count]]
        if compiler.has_composite_fields(fields):
            raise ValueError("a read of composite fields is not compiled")
        converters = tuple(
            (position, tuple(functions), expression)
            for position, (functions, expression) in compiler.get_converters(fields).items()
        )
        filled = tuple(
            None if position in slots else value for position, value in enumerate(params)
        )
        slotted = tuple((position, *slot) for position, slot in slots.items())
        if iterable is ValuesIterable:
            names = tuple(
                query.selected
                or (*query.extra_select, *query.values_select, *query.annotation_select)
            )
            compiled = _Compiled(sql, filled, slotted, using, converters, names=names)
        elif iterable is ModelIterable:
            klass_info = compiler.klass_info
            first, last = klass_info["select_fields"][0], klass_info["select_fields"][-1]
            compiled = _Compiled(
                sql,
                filled,
                slotted,
                using,
                converters,
                model=klass_info["model"],
                init_list=tuple(column[0].target.attname for column in select[first : last + 1]),
                model_fields=slice(first, last + 1),
                populators=tuple(get_related_populators(klass_info, select, using)),
                annotations=tuple(compiler.annotation_col_map.items()),
            )
        else:
            raise ValueError("only a read of model instances or of values() is compiled")
        self._compiled = compiled
        return compiled

    def _sql(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...], Any, str, type]:
        queryset = self._build(**values)
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        return sql, tuple(params), compiler, queryset.db, queryset._iterable_class
