"""The users whose answer to a condition can change by time alone within a window, as one
parameterised WHERE fragment over ``users {alias}``: what the worker's time pass re-evaluates
instead of every user.

A condition's answer moves with ``now`` only through its time leaves (see
:func:`shared.conditions.uses_time`), each of which changes value only at known instants:

- ``within_last_days`` N (``now - N days <= v <= now``): at ``v`` and at ``v + N days``;
- ``more_than_days_ago`` N (``v < now - N days``): at ``v + N days``;
- an event leaf with ``withinDays`` N counts the days ``d > today - N`` (today: the UTC date of
  ``now``, in both engines), so from the date of ``since`` to the date of ``until`` the days
  ``date(since) - N < d <= date(until) - N`` leave the window (days after today are counted
  already); only a user with such a row can change, and only when the UTC date changes.

Over the closed window ``[since, until]`` the fragment holds for every user with such an
instant (or row) in it, and for no user whose every time leaf keeps its value: a leaf that
keeps its value for a user cannot change the tree's answer. ``v`` is read exactly as the SQL
engine reads it (:meth:`_Compiler.reader`: ``epochs`` for ISO strings, epoch numbers from
``attributes``, the timestamp columns), company leaves through the user's companies.
Segment leaves are not followed: a referenced segment answers for itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.conditions import sql_coerce as sc
from shared.conditions.coerce import US_PER_DAY
from shared.conditions.model import Attribute, Condition, Event
from shared.conditions.operators import typed_value
from shared.conditions.parse import retyped
from shared.conditions.references import TIME_OPERATORS, leaves
from shared.conditions.sql_engine import _Compiler, _numeric, _Params


def compile_time_flips(
    cond: Condition,
    *,
    alias: str = "u",
    first_param: int,
    since_param: int,
    until_param: int,
    env_param: int,
    types: Mapping[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """``(where_fragment, params)``: the users of ``users {alias}`` whose answer to ``cond``
    can differ between two instants of ``[$since_param, $until_param]`` (timestamptz the
    caller binds) by time alone (see the module's doc). ``$env_param`` is the environment's
    id (bigint); parameters of the fragment are numbered from ``$first_param``. ``false``
    when no leaf depends on time."""
    params = _Params(first_param)
    compiler = _Compiler(alias, params, None, None, env_param)
    compiler.under_or = True  # one OR of per-leaf tests: relations as hashed sub-plans
    since = sc.column_epoch_us(f"${since_param}::timestamptz")
    until = sc.column_epoch_us(f"${until_param}::timestamptz")
    tests: list[str] = []
    for leaf in leaves(retyped(cond, types)):
        if isinstance(leaf, Attribute) and leaf.op in TIME_OPERATORS:
            if leaf.type != "datetime":  # not evaluable as a time leaf: assume any user
                return "true", params.values
            span = params.add(_numeric(typed_value(leaf) * US_PER_DAY), "numeric")
            # bounds in sub-selects (InitPlans): computed once per statement, not per row
            instants = [f"(SELECT numrange({since} - {span}, {until} - {span}, '[]'))"]
            if leaf.op == "within_last_days":
                instants.append(f"(SELECT numrange({since}, {until}, '[]'))")
            if leaf.scope == "company":
                x = compiler.reader(leaf, False, "seg_c")
                tests.append(
                    compiler.related(
                        "seg_cm",
                        "company_members seg_cm JOIN companies seg_c "
                        "ON seg_c.env_id = seg_cm.env_id AND seg_c.id = seg_cm.company_pk",
                        "(" + " OR ".join(f"{r} @> {x}" for r in instants) + ")",
                    )
                )
            else:
                x = compiler.reader(leaf, False, alias)
                tests.extend(f"coalesce({r} @> {x}, false)" for r in instants)
        elif isinstance(leaf, Event) and leaf.within_days is not None:
            days = params.add(leaf.within_days, "int")
            start = f"((${since_param}::timestamptz AT TIME ZONE 'UTC')::date - {days})"
            end = f"((${until_param}::timestamptz AT TIME ZONE 'UTC')::date - {days})"
            tests.append(
                compiler.related(
                    "seg_ec",
                    "event_counts seg_ec",
                    f"seg_ec.name = {params.add(leaf.event, 'text')} "
                    f"AND seg_ec.day > {start} AND seg_ec.day <= {end}",
                )
            )
    if not tests:
        return "false", params.values
    return "(" + " OR ".join(tests) + ")", params.values
