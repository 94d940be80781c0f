"""Dynamic segments to recompute when the data under them changes through the admin API
(members of a manual segment they refer to, tags they use), rather than their definition.

They are marked 'computing' in the transaction that changes the data: if the recompute job
is lost (Redis down), the worker's sweep finds them, as it finds lost definition recomputes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec

from services.admin.segments.references import tag_refs
from services.admin.state import AdminState
from shared.db import Conn
from shared.membership.graph import SegmentGraph


class Dependents(msgspec.Struct):
    """(segment id, version) pairs to recompute, each after the segments it refers to."""

    segments: list[tuple[int, int]] = []


async def data_dependents(
    conn: Conn,
    env_id: int,
    *,
    segment_ids: Iterable[int] = (),
    tag_keys: Iterable[str] = (),
) -> Dependents:
    """The dynamic segments directly affected by a change of the members of ``segment_ids``
    (they refer to one) or of who carries tags with keys ``tag_keys`` (they have a leaf on
    such a key, whatever its value); marked 'computing'. Segments built on those are not
    listed: the worker's recompute continues to them when their inputs changed. Call inside
    the transaction."""
    rows = await conn.fetch(
        "SELECT id, key, kind, conditions FROM segments WHERE env_id = $1", env_id
    )
    graph = SegmentGraph(
        {r["key"]: r["id"] for r in rows},
        {r["id"]: r["conditions"] for r in rows if r["conditions"] is not None},
    )
    keys = set(tag_keys)
    seeds = set(segment_ids)
    using_tags = {
        r["id"]
        for r in rows
        if r["kind"] == "dynamic" and keys and any(k in keys for k, _ in tag_refs(r["conditions"]))
    }
    # the worker's recompute continues to the segments built on these, when they change
    targets = using_tags | {s for s, refs in graph.edges.items() if refs & seeds}
    dynamic = {r["id"] for r in rows if r["kind"] == "dynamic"}
    ids = [s for s in graph.in_order(targets) if s in dynamic]
    if not ids:
        return Dependents()
    versions = {
        r["id"]: r["version"]
        for r in await conn.fetch(
            """UPDATE segments SET status = 'computing'
               WHERE env_id = $1 AND id = ANY($2::bigint[]) RETURNING id, version""",
            env_id,
            ids,
        )
    }
    return Dependents([(s, versions[s]) for s in ids if s in versions])


async def enqueue_dependents(admin: AdminState, env_id: int, dependents: Dependents) -> None:
    """Enqueue the recomputes after the commit, with job ids of their own (a recompute of the
    same version already running read the data before this change)."""
    nonce = uuid.uuid4().hex[:12]
    for segment_id, version in dependents.segments:
        await admin.enqueue_recompute(env_id, segment_id, version, nonce=nonce)
