"""Admin tests that count rows a worker would change (inbox, deliveries) run on a database and
Redis prefix of their own: the session's end-to-end stack runs a worker on the shared one."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from tests.conftest import private_package_fixtures

settings, db, redis = private_package_fixtures("isolated")


@pytest.fixture(scope="package")
def quiet_settings(settings: Settings) -> Settings:
    return settings  # no worker serves this prefix
