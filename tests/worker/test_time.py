"""Time-dependent segments change without new data; bulk recomputes carry on to the segments
built on the one that changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.query.memberships import Memberships
from services.worker.timed import recheck_timed_segments
from shared.environments import EnvironmentKeys
from shared.membership import recompute_with_dependents
from shared.redis_keys import anonymous
from tests.worker.conftest import Worker
from tests.worker.test_segments import _segment


async def _changes(worker: Worker, env_id: int) -> list[tuple[str, bool, str]]:
    rows = await worker.pool.fetch(
        """SELECT s.key, c.entered, c.cause FROM membership_changes c
           JOIN segments s ON s.env_id = c.env_id AND s.id = c.segment_id
           WHERE c.env_id = $1 AND s.kind = 'dynamic' ORDER BY c.id""",
        env_id,
    )
    return [(r["key"], r["entered"], r["cause"]) for r in rows]


async def _redefine(worker: Worker, env_id: int, segment_id: int, conditions: object) -> None:
    """Change a segment's conditions and recompute it (and its dependents) in bulk."""
    await worker.pool.execute(
        """UPDATE segments SET conditions = $3, version = version + 1
           WHERE env_id = $1 AND id = $2""",
        env_id,
        segment_id,
        conditions,
    )
    await recompute_with_dependents(
        worker.pool, worker.cache, env_id, segment_id, datetime.now(UTC)
    )


async def new_and_new_pro(worker: Worker, env_id: int) -> int:
    """Segments "new" (signed_up within the last day; its id is returned) and "new-pro"
    (members of "new" on the pro plan)."""
    new = await _segment(
        worker, env_id, "new", {"attribute": "signed_up", "op": "within_last_days", "value": 1}
    )
    await _segment(
        worker,
        env_id,
        "new-pro",
        {"all": [{"segment": "new"}, {"attribute": "plan", "op": "is", "value": "pro"}]},
    )
    return new


async def test_a_time_based_exit_happens_without_new_data(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await new_and_new_pro(worker, env.id)
    now = datetime.now(UTC)
    signed = (now - timedelta(hours=12)).isoformat()
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "traits": {"signed_up": signed, "plan": "pro"}}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "new", "new-pro"}

    done = await recheck_timed_segments(worker.pool, worker.cache, worker.catalog, now)
    assert done.segments >= 1
    assert await worker.segments_of(env.id, "u") == {"all-users", "new", "new-pro"}
    later = now + timedelta(days=1)
    await recheck_timed_segments(worker.pool, worker.cache, worker.catalog, later)
    assert await worker.segments_of(env.id, "u") == {"all-users"}
    await recheck_timed_segments(worker.pool, worker.cache, worker.catalog, later)
    assert sorted(await _changes(worker, env.id)) == [
        ("new", False, "time"),
        ("new", True, "message"),
        ("new-pro", False, "time"),
        ("new-pro", True, "message"),
    ]
    members = await worker.cache.get(env.id, "u")
    assert members is not None and len(members) == 1  # Redis followed


async def test_bulk_recompute_carries_on_to_dependents(
    worker: Worker, env: EnvironmentKeys
) -> None:
    a = await _segment(worker, env.id, "a", {"attribute": "plan", "op": "is", "value": "pro"})
    await _segment(worker, env.id, "b", {"any": [{"segment": "a"}]})
    await _segment(worker, env.id, "c", {"none": [{"segment": "b"}]})
    await worker.send(env.id, {"type": "identify", "userId": "u", "traits": {"plan": "free"}})
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "c"}
    await _redefine(worker, env.id, a, {"attribute": "plan", "op": "is", "value": "free"})
    assert await worker.segments_of(env.id, "u") == {"all-users", "a", "b"}


async def test_bulk_recompute_refreshes_anonymous_keys_too(
    worker: Worker, env: EnvironmentKeys
) -> None:
    seg = await _segment(worker, env.id, "fr", {"attribute": "lang", "op": "is", "value": "fr"})
    await worker.send(
        env.id, {"type": "identify", "anonymousId": "anon-fr", "traits": {"lang": "fr"}}
    )
    await worker.drain()
    assert seg in (await worker.cache.get(env.id, anonymous("anon-fr")) or set())
    await _redefine(worker, env.id, seg, {"attribute": "lang", "op": "is", "value": "de"})
    members = await worker.cache.get(env.id, anonymous("anon-fr"))
    assert members is not None and seg not in members


async def test_bulk_recompute_holds_sets_it_cannot_patch(
    worker: Worker, env: EnvironmentKeys
) -> None:
    """A user with no set in Redis gets a hold: reads miss and refill the recomputed state,
    and a late write of the state before the recompute is turned away."""
    seg = await _segment(worker, env.id, "de", {"attribute": "lang", "op": "is", "value": "de"})
    await worker.send(env.id, {"type": "identify", "userId": "gone", "traits": {"lang": "de"}})
    await worker.drain()
    before = await worker.pool.fetchval(
        "SELECT membership_version FROM users WHERE env_id = $1 AND user_id = 'gone'", env.id
    )
    assert seg in (await worker.cache.get(env.id, "gone") or set())
    await worker.cache.forget(env.id, ["gone"])  # evicted, or never read
    await _redefine(worker, env.id, seg, {"attribute": "lang", "op": "is", "value": "fr"})
    assert await worker.cache.get(env.id, "gone") is None  # a hold: the next read misses
    await worker.cache.write(env.id, "gone", before, [seg])  # a refill from an old snapshot
    assert await worker.cache.get(env.id, "gone") is None
    known, segments = await Memberships(worker.cache, worker.pool).read(env.id, "gone")
    assert known and seg not in segments
    refilled = await worker.cache.get(env.id, "gone")
    assert refilled is not None and seg not in refilled and refilled == segments
