"""Membership: which segments each user belongs to, stored in PostgreSQL and cached in Redis.

Read top to bottom:

- :mod:`~shared.membership.locking`: the lock order every writer follows, and the retry of a
  deadlock at once;
- :mod:`~shared.membership.graph`: segment names and the graph of segment references
  (evaluation order, the segments built on one);
- :mod:`~shared.membership.catalog`: an environment's segments compiled for the Python engine
  (what the worker evaluates for the users a batch touched);
- :mod:`~shared.membership.loader`: everything a condition reads of a set of users, loaded
  once for the worker and for explain;
- :mod:`~shared.membership.store`: stored memberships, the difference written, the change log
  and webhook outbox, and the one rule that bumps ``membership_version``;
- :mod:`~shared.membership.outbox`: every writer's Redis step tied to its commit, and the
  sweeper that finishes it when the writer died;
- :mod:`~shared.membership.recompute`: the bulk recompute of a segment by SQL, in chunks;
- :mod:`~shared.membership.progress`: its progress report;
- :mod:`~shared.membership.cache`: the Redis protocol (versioned sets, patches, holds) and
  the PostgreSQL reads that refill it;
- :mod:`~shared.membership.verify`: the verifier comparing every Redis set with PostgreSQL.
"""

from shared.membership.catalog import DynamicSegment, EnvSegments, SegmentCatalog
from shared.membership.graph import dependency_order, dependents_of, segment_names
from shared.membership.recompute import (
    RecomputeResult,
    recompute_segment,
    recompute_with_dependents,
)
from shared.membership.store import (
    Bumped,
    bump_versions,
    inserted_version,
    record_changes,
    stored_memberships,
    write_memberships,
)

__all__ = [
    "Bumped",
    "DynamicSegment",
    "EnvSegments",
    "RecomputeResult",
    "SegmentCatalog",
    "bump_versions",
    "dependency_order",
    "dependents_of",
    "inserted_version",
    "recompute_segment",
    "recompute_with_dependents",
    "record_changes",
    "segment_names",
    "stored_memberships",
    "write_memberships",
]
