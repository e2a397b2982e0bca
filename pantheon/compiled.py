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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from django.core.exceptions import FullResultSet
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.query import (  # type: ignore[attr-defined]
    ModelIterable,
    ValuesIterable,
    get_related_populators,
)
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)

KINDS = (int, str, uuid.UUID)
# How a backend may write a parameter of each kind in a query's parameters (None: as it is).
_WRITTEN: dict[type, tuple[Callable[[Any], Any] | None, ...]] = {
    int: (None,),
    str: (None,),
    uuid.UUID: (None, lambda value: value.hex),
}


def _plain(value: Any) -> Any:
    """A choice (a member of a str or int enum: TextChoices, StrEnum, IntegerChoices) as the
    plain str or int it is, which psycopg writes alike: the same bytes, the same type. psycopg
    finds the writer of an enum's member by walking its class's MRO up to str or int, on every
    new cursor, each Django cursor being new (4.5 us a member's class, some 20 a turn)."""
    kind = type(value)
    if kind is str or kind is int or value is None or not isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    return value


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


def _sentinels(parameters: Mapping[str, type]) -> list[dict[str, Any]]:
    """The values of the two compilations (`_sentinel`), by parameter name."""
    return [
        {
            name: _sentinel(kind, number, pass_)
            for number, (name, kind) in enumerate(parameters.items())
        }
        for pass_ in (0, 1)
    ]


def _same_sql(sql: str, params: Sequence[Any], other_sql: str, other_params: Sequence[Any]) -> None:
    if sql != other_sql or len(params) != len(other_params):
        raise ValueError("the queryset's SQL changes with its parameters' values")


def _slots(
    parameters: Mapping[str, type],
    sentinels: list[dict[str, Any]],
    params: Sequence[Any],
    other_params: Sequence[Any],
) -> dict[int, tuple[str, Callable[[Any], Any] | None]]:
    """Which of the compiled parameters each named parameter fills (by position), and how the
    backend writes it: found where the two compilations' parameters differ."""
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
    missing = set(parameters) - {name for name, _ in slots.values()}
    if missing:
        raise ValueError(f"parameters not in the queryset's SQL: {sorted(missing)}")
    return slots


def _filled(
    params: tuple[Any, ...],
    slots: tuple[tuple[int, str, Callable[[Any], Any] | None], ...],
    parameters: Mapping[str, type],
    values: Mapping[str, Any],
) -> list[Any]:
    """The compiled parameters with each call's values in their slots."""
    filled = list(params)
    for position, name, written in slots:
        kind = parameters[name]
        value = values[name]
        value = value if type(value) is kind else kind(value)
        filled[position] = value if written is None else written(value)
    return filled


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
        params = _filled(compiled.params, compiled.slots, self._parameters, values)
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
        sentinels = _sentinels(self._parameters)
        (sql, params, compiler, using, iterable), (other_sql, other_params, *_) = (
            self._sql(values) for values in sentinels
        )
        _same_sql(sql, params, other_sql, other_params)
        slots = _slots(self._parameters, sentinels, params, other_params)
        select, query = compiler.select, compiler.query
        fields = [column[0] for column in select[: compiler.col_count]]
        if compiler.has_composite_fields(fields):
            raise ValueError("a read of composite fields is not compiled")
        converters = tuple(
            (position, tuple(functions), expression)
            for position, (functions, expression) in compiler.get_converters(fields).items()
        )
        filled = tuple(
            None if position in slots else _plain(value) for position, value in enumerate(params)
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


@dataclass(frozen=True)
class _CompiledUpdate:
    sql: str
    fields: tuple[Field, ...]  # what SET writes, in order: each call's values come first
    params: tuple[Any, ...]  # the filter's, None where a parameter goes
    slots: tuple[tuple[int, str, Callable[[Any], Any] | None], ...]
    using: str


class CompiledUpdate:
    """`build(**parameters)`'s rows updated, with the `fields` named given new values at each
    call, as `QuerySet.update` would write them (each value prepared by its field), in SQL
    compiled once per process. Django builds and compiles an update afresh on every call: for
    the turn's ending, whose filter holds an EXISTS of the live session, that was over ten
    times the CPU of running it. Only the queryset's own table is updated, by plain values (no
    expressions); its filter may hold subqueries but no join."""

    def __init__(
        self, build: Callable[..., QuerySet], fields: Sequence[str], **parameters: type
    ) -> None:
        unknown = [kind for kind in parameters.values() if kind not in KINDS]
        if unknown:
            raise TypeError(f"no compiled parameters of type {unknown[0]!r}")
        self._build = build
        self._names = tuple(fields)
        self._parameters = parameters
        self._compiled: _CompiledUpdate | None = None

    def update(self, values: Mapping[str, Any], **parameters: Any) -> int:
        """Set `values` (one for each of the fields named) on the rows the filter finds with
        `parameters`; returns how many rows it updated, as `QuerySet.update` does."""
        sql, params = self.statement(values, **parameters)
        using = self._using()
        with (
            transaction.mark_for_rollback_on_error(using),
            connections[using].cursor() as cursor,
        ):
            cursor.execute(sql, params)
            return cursor.rowcount

    def statement(self, values: Mapping[str, Any], **parameters: Any) -> tuple[str, list[Any]]:
        """`update`'s UPDATE and its parameters, for a statement that holds it (a WITH)."""
        if parameters.keys() != self._parameters.keys() or len(values) != len(self._names):
            raise TypeError(f"expected the values of {self._names} and {sorted(self._parameters)}")
        compiled = self._compiled or self._compile()
        connection = connections[compiled.using]
        written = []
        for field in compiled.fields:
            value = values[field.name]
            if hasattr(value, "resolve_expression"):
                raise TypeError(f"{field.name}: a compiled update writes plain values")
            written.append(_plain(field.get_db_prep_save(value, connection=connection)))
        where = _filled(compiled.params, compiled.slots, self._parameters, parameters)
        return compiled.sql, [*written, *where]

    def _using(self) -> str:
        return (self._compiled or self._compile()).using

    def _compile(self) -> _CompiledUpdate:
        sentinels = _sentinels(self._parameters)
        (sql, params, model, using), (other_sql, other_params, *_) = (
            self._where(values) for values in sentinels
        )
        _same_sql(sql, params, other_sql, other_params)
        slots = _slots(self._parameters, sentinels, params, other_params)
        meta = model._meta
        fields = tuple(meta.get_field(name) for name in self._names)
        for field in fields:
            if (
                not getattr(field, "concrete", False)
                or field.many_to_many
                or field.primary_key
                or field.model is not meta.concrete_model
                or hasattr(field, "get_placeholder")
            ):
                raise ValueError(f"{field.name}: not a column a compiled update can set")
        connection = connections[using]
        quote = connection.ops.quote_name
        sets = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        self._compiled = _CompiledUpdate(
            sql=f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {sql}",
            fields=fields,
            params=tuple(
                None if position in slots else _plain(v) for position, v in enumerate(params)
            ),
            slots=tuple((position, *slot) for position, slot in slots.items()),
            using=using,
        )
        return self._compiled

    def _where(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...], Any, str]:
        """The filter's WHERE as `QuerySet.update` compiles it, with its parameters."""
        queryset = self._build(**values)
        query = queryset.query.chain(UpdateQuery)
        query.clear_ordering(force=True)
        query.get_initial_alias()
        if query.count_active_tables() != 1 or query.annotations:
            raise ValueError("a compiled update's filter joins no other table")
        compiler = query.get_compiler(using=queryset.db)
        try:
            where, params = compiler.compile(query.where)
        except FullResultSet:
            raise ValueError("a compiled update has a filter") from None
        return where, tuple(params), queryset.model, queryset.db


@dataclass(frozen=True)
class _CompiledInsert:
    sql: str
    fields: tuple[Field, ...]  # the columns written, in order
    returning: tuple[tuple[Field, tuple[Callable, ...], Any], ...]  # (field, converters, col)
    # The insert as INSERT ... SELECT, which a WHERE may hold back (`Chain`), and the quoted
    # names of the columns it returns.
    selected: str = ""
    returned: tuple[str, ...] = ()


class CompiledInsert:
    """Model instances inserted as `save(force_insert=True)` inserts them (each value prepared
    by its field, `pre_save` included; an automatic primary key read back), with the INSERT
    compiled once per process: `save()` builds and compiles its query afresh on every call,
    for a turn's rows (the turn, its messages, its ledger rows, its audit) about twice the CPU
    of running it. An instance's save() runs instead when the insert cannot be compiled: a
    value that is an expression (a database default), a model with receivers of `pre_save` or
    `post_save` (they would not be sent), a parent model, or a database that cannot return an
    automatic key."""

    def __init__(self, model: type[Model], using: str = DEFAULT_DB_ALIAS) -> None:
        self._model = model
        self._using = using
        self._compiled: _CompiledInsert | None = None

    def insert(self, instance: Model) -> None:
        prepared = self._prepared(instance)
        if prepared is None:
            instance.save(force_insert=True, using=self._using)
            return
        compiled, params = prepared
        connection = connections[self._using]
        with (
            transaction.mark_for_rollback_on_error(self._using),
            connection.cursor() as cursor,
        ):
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone() if compiled.returning else None
        _inserted(instance, compiled, row, self._using)

    def _prepared(self, instance: Model) -> tuple[_CompiledInsert, list[Any]] | None:
        """The INSERT and its parameters for `instance`; None where save() must run."""
        model = type(instance)
        if (
            model is not self._model
            or pre_save.has_listeners(model)
            or post_save.has_listeners(model)
            # save() inserts an automatic key it is given, and makes a missing key from its
            # field's default: the compiled INSERT writes neither.
            or (instance.pk is None) is not (model._meta.pk is model._meta.auto_field)
        ):
            return None
        compiled = self._compiled or self._compile()
        if compiled is None:
            return None
        connection = connections[self._using]
        params = []
        for field in compiled.fields:
            value = field.pre_save(instance, True)
            if hasattr(value, "resolve_expression"):
                return None
            params.append(_plain(field.get_db_prep_save(value, connection=connection)))
        return compiled, params

    def _compile(self) -> _CompiledInsert | None:
        meta = self._model._meta
        connection = connections[self._using]
        if meta.parents:
            return None
        auto = meta.auto_field
        fields = tuple(field for field in meta.local_concrete_fields if field is not auto)
        if any(hasattr(field, "get_placeholder") for field in fields):
            return None
        returning: tuple[Field, ...] = () if auto is None else (auto,)
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        into = f"INSERT INTO {quote(meta.db_table)} ({columns})"
        sql = f"{into} VALUES ({placeholders})"
        if returning:
            if not connection.features.can_return_columns_from_insert:
                return None
            returned, returned_params = connection.ops.return_insert_columns(returning)
            if returned_params:
                return None
            sql = f"{sql} {returned}"
        converters = []
        for field in returning:
            column = field.get_col(meta.db_table)
            functions = connection.ops.get_db_converters(column) + column.get_db_converters(
                connection
            )
            converters.append((field, tuple(functions), column))
        self._compiled = _CompiledInsert(
            sql,
            fields,
            tuple(converters),
            selected=f"{into} SELECT {placeholders}",
            returned=tuple(quote(field.column) for field in returning),
        )
        return self._compiled


def _inserted(instance: Model, compiled: _CompiledInsert, row: Any, using: str) -> None:
    """`instance` as save() leaves it: saved, its automatic key read back (`row`)."""
    if row is not None:
        connection = connections[using]
        for value, (field, converters, column) in zip(row, compiled.returning, strict=True):
            for converter in converters:
                value = converter(value, column, connection)
            setattr(instance, field.attname, value)
    instance._state.adding = False
    instance._state.db = using


def insert_together(rows: Sequence[tuple[CompiledInsert, Model]]) -> None:
    """Rows of several tables inserted in one statement on PostgreSQL (each INSERT but the
    last in a WITH), each as its `CompiledInsert` inserts it: one trip to the database instead
    of one a row, in the same order, with the same constraints checked (a unique one fails the
    whole statement, as it would its row's; foreign keys are checked at the commit, Django's
    are deferred). Elsewhere, or where one row cannot be compiled (save() would run) or one
    before the last reads back an automatic key, each is inserted in turn."""
    prepared = [(insert, instance, insert._prepared(instance)) for insert, instance in rows]
    usings = {insert._using for insert, _ in rows}
    connection = connections[next(iter(usings))] if len(usings) == 1 else None
    if (
        connection is None
        or connection.vendor != "postgresql"
        or len(rows) < 2
        or any(ready is None for _, _, ready in prepared)
        or any(ready[0].returning for _, _, ready in prepared[:-1] if ready is not None)
    ):
        for insert, instance in rows:
            insert.insert(instance)
        return
    statements, params = [], []
    for _, _, ready in prepared:
        assert ready is not None
        statements.append(ready[0].sql)
        params.extend(ready[1])
    sql = ", ".join(f"_{number} AS ({sql})" for number, sql in enumerate(statements[:-1]))
    last = prepared[-1][2]
    assert last is not None
    with (
        transaction.mark_for_rollback_on_error(connection.alias),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"WITH {sql} {statements[-1]}", params)
        row = cursor.fetchone() if last[0].returning else None
    for position, (insert, instance, ready) in enumerate(prepared):
        assert ready is not None
        _inserted(instance, ready[0], row if position == len(prepared) - 1 else None, insert._using)


class Chain:
    """Writes run as one statement on PostgreSQL (a WITH), in the order they are added, each
    only if the one before it wrote a row: a transaction's writes in one trip to the database,
    with the row locks taken in the same order as by one statement each (each write waits for
    the one before it: the next one's WHERE asks whether it returned a row), but for the
    foreign keys' checks of its inserts (the rows they refer to locked FOR KEY SHARE): those
    run once the whole statement is done, after its last write's lock is taken, where one
    statement each ran them at the end of each insert. Each write is a named part of the WITH
    that returns a row for each row it writes; `run` runs them and tells how many rows each
    of those named `counted` wrote, and what those named `read` returned (their one row's
    first column, or None).

    Its inserts are `CompiledInsert`'s, held back by the WHERE of an INSERT ... SELECT: an
    insert that cannot be compiled (save() would run) cannot be chained (`insert` says so)."""

    def __init__(self, name: str, sql: str, params: Sequence[Any]) -> None:
        """The first write: `sql`, an UPDATE or a DELETE with no RETURNING."""
        self._parts = [f"{name} AS ({sql} RETURNING 1)"]
        self._params = list(params)
        self._last = name
        self._inserted: list[tuple[Model, _CompiledInsert, str]] = []
        self._using = DEFAULT_DB_ALIAS

    @property
    def after(self) -> str:
        """The condition that holds a write back until the one before it wrote a row."""
        return f"EXISTS (SELECT FROM {self._last})"

    def add(self, name: str, sql: str, params: Sequence[Any]) -> None:
        """A write whose SQL holds `after` in its WHERE and returns a row for each row it
        writes."""
        self._parts.append(f"{name} AS ({sql})")
        self._params.extend(params)
        self._last = name

    def insert(self, insert: CompiledInsert, instance: Model) -> bool:
        """`instance` inserted next, as `insert` inserts it; False (nothing added) where that
        insert cannot be compiled."""
        prepared = insert._prepared(instance)
        if prepared is None or not prepared[0].selected:
            return False
        compiled, params = prepared
        if len(compiled.returned) > 1:
            return False
        name = f"_{len(self._parts)}"
        returned = compiled.returned[0] if compiled.returned else "1"
        self.add(name, f"{compiled.selected} WHERE {self.after} RETURNING {returned}", params)
        self._inserted.append((instance, compiled, name))
        self._using = insert._using
        return True

    def run(self, counted: Sequence[str], read: Sequence[str] = ()) -> list[Any]:
        """Runs the writes: the rows each of `counted` wrote, then the value each of `read`
        returned (None: no row), in that order. The instances inserted are left as save()
        leaves them, their automatic keys read back."""
        columns = [f"(SELECT count(*) FROM {name})" for name in counted]
        columns += [f"(SELECT * FROM {name})" for name in read]
        # Each insert's automatic key, or (none read back) how many rows it wrote: 0 or 1.
        inserts = [f"(SELECT * FROM {name})" for _, _, name in self._inserted]
        sql = f"WITH {', '.join(self._parts)} SELECT {', '.join([*columns, *inserts])}"
        connection = connections[self._using]
        with (
            transaction.mark_for_rollback_on_error(self._using),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, self._params)
            row = cursor.fetchone()
        for (instance, compiled, _), key in zip(self._inserted, row[len(columns) :], strict=True):
            if key is not None:  # held back: not inserted
                _inserted(instance, compiled, [key] if compiled.returning else None, self._using)
        return list(row[: len(columns)])
