"""Partition tests run on a database of their own: they drop partitions (a clock moved
months ahead) that other packages' tests would still read."""

from __future__ import annotations

from tests.conftest import private_package_fixtures
from tests.worker.conftest import worker

settings, db, redis = private_package_fixtures("partitions")

__all__ = ["db", "redis", "settings", "worker"]
