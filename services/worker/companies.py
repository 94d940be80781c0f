"""Group messages: companies, a user's membership of them, and the attributes of both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.db import Conn
from shared.messages import Change
from shared.profiles import apply_changes

_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class CompanyOp:
    """One group message: user ``user_pk`` belongs to company ``group_id``."""

    user_pk: int
    group_id: str
    attributes: dict[str, Change]
    membership: dict[str, Change]
    at: int
    message_id: str


async def apply_company_ops(
    conn: Conn, env_id: int, ops: Sequence[CompanyOp], changed: set[int]
) -> list[tuple[str, str, str]]:
    """Upsert the companies and memberships of ``ops`` (in order); returns warnings as
    (attribute, warning, messageId), and adds to ``changed`` the companies whose attributes
    changed (their other members' company-scope conditions must be evaluated again)."""
    group_ids = sorted({op.group_id for op in ops})
    await conn.execute(
        """INSERT INTO companies (env_id, company_id)
           SELECT $1, g FROM unnest($2::text[]) AS g ORDER BY g
           ON CONFLICT (env_id, company_id) DO NOTHING""",
        env_id,
        group_ids,
    )
    rows = await conn.fetch(
        """SELECT id, company_id, attributes, attr_ts FROM companies
           WHERE env_id = $1 AND company_id = ANY($2) ORDER BY id FOR UPDATE""",
        env_id,
        group_ids,
    )
    companies: dict[str, tuple[int, dict[str, Any], dict[str, int]]] = {
        r["company_id"]: (r["id"], dict(r["attributes"]), dict(r["attr_ts"])) for r in rows
    }
    pairs = {(op.user_pk, companies[op.group_id][0]) for op in ops}
    member_rows = await conn.fetch(
        """SELECT m.user_pk, m.company_pk, m.attributes, m.attr_ts
           FROM company_members m JOIN unnest($2::bigint[], $3::bigint[]) AS x(u, c)
             ON m.user_pk = x.u AND m.company_pk = x.c
           WHERE m.env_id = $1""",
        env_id,
        [u for u, _ in pairs],
        [c for _, c in pairs],
    )
    members: dict[tuple[int, int], tuple[dict[str, Any], dict[str, int]]] = {
        (r["user_pk"], r["company_pk"]): (dict(r["attributes"]), dict(r["attr_ts"]))
        for r in member_rows
    }
    before = {pk: dict(attributes) for pk, attributes, _ in companies.values()}
    warnings: list[tuple[str, str, str]] = []
    for op in ops:
        company_pk, attributes, timestamps = companies[op.group_id]
        for name, warning in apply_changes(attributes, timestamps, op.attributes, op.at):
            warnings.append((name, warning, op.message_id))
        m_attrs, m_ts = members.setdefault((op.user_pk, company_pk), ({}, {}))
        for name, warning in apply_changes(m_attrs, m_ts, op.membership, op.at):
            warnings.append((name, warning, op.message_id))
    changed.update(pk for pk, attributes, _ in companies.values() if attributes != before[pk])
    await conn.execute(
        """UPDATE companies c SET attributes = x.a::jsonb, attr_ts = x.t::jsonb, updated_at = now()
           FROM unnest($2::bigint[], $3::text[], $4::text[]) AS x(i, a, t)
           WHERE c.env_id = $1 AND c.id = x.i""",
        env_id,
        [c[0] for c in companies.values()],
        [_json.encode(c[1]).decode() for c in companies.values()],
        [_json.encode(c[2]).decode() for c in companies.values()],
    )
    keys = list(members)
    await conn.execute(
        """INSERT INTO company_members (env_id, user_pk, company_pk, attributes, attr_ts)
           SELECT $1, u, c, a::jsonb, t::jsonb
           FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS x(u, c, a, t)
           ON CONFLICT (env_id, user_pk, company_pk)
           DO UPDATE SET attributes = EXCLUDED.attributes, attr_ts = EXCLUDED.attr_ts""",
        env_id,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [_json.encode(members[k][0]).decode() for k in keys],
        [_json.encode(members[k][1]).decode() for k in keys],
    )
    return warnings
