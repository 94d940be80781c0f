"""Console accounts from the command line and the development runner (no browser)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from services.admin.console.accounts import environments_of, sign_in
from services.admin.console.cli import ensure_dev_account
from shared.environments import EnvironmentKeys
from shared.settings import Settings, to_environ
from tests.conftest import ROOT


def _cli(settings: Settings, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "console-user", "add", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=to_environ(settings),
        cwd=ROOT,
        timeout=60,
    )


async def test_console_user_add_reads_the_password_from_stdin(
    settings: Settings, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    email = f"cli-{secrets.token_hex(3)}@example.com"
    done = await asyncio.to_thread(
        _cli, settings, email, "--env", env.name, stdin="a long enough password\n"
    )
    assert done.returncode == 0, done.stderr
    assert env.name in done.stdout
    outcome = await sign_in(db, email, "a long enough password")
    assert outcome.account_id is not None
    assert [e.name for e in await environments_of(db, outcome.account_id)] == [env.name]
    assert (await sign_in(db, email, "a long enough passworD")).account_id is None
    # the stored hash is argon2id, never the password
    stored = await db.fetchval(
        "SELECT password_hash FROM console_accounts WHERE id = $1", outcome.account_id
    )
    assert stored.startswith("$argon2id$") and "a long enough" not in stored


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["not-an-email"], "a long enough password\n", "Email"),
        (["short@example.com"], "short\n", "at least 8"),
        (["x@example.com", "--env", "no-such-environment"], "a long enough password\n", "--env"),
    ],
)
async def test_console_user_add_refuses_bad_input(
    settings: Settings, db: asyncpg.Pool, args: list[str], stdin: str, message: str
) -> None:
    done = await asyncio.to_thread(_cli, settings, *args, stdin=stdin)
    assert done.returncode != 0
    assert message in done.stderr
    email = args[0]
    assert await db.fetchval("SELECT count(*) FROM console_accounts WHERE email = $1", email) == 0


async def test_the_dev_runner_account_is_generated_once_and_kept(
    settings: Settings, db: asyncpg.Pool, env: EnvironmentKeys, tmp_path: Path
) -> None:
    assert settings.database_url is not None
    first = await asyncio.to_thread(
        ensure_dev_account, settings.database_url, tmp_path, env.name, None, None
    )
    again = await asyncio.to_thread(
        ensure_dev_account, settings.database_url, tmp_path, env.name, None, None
    )
    assert (first.email, first.password) == (again.email, again.password)
    assert first.generated and not again.generated and len(first.password) >= 12
    outcome = await sign_in(db, first.email, first.password)
    assert outcome.account_id is not None
    chosen = await asyncio.to_thread(
        ensure_dev_account,
        settings.database_url,
        tmp_path / "other",
        env.name,
        f"dev-{secrets.token_hex(3)}@example.com",
        "chosen password",
    )
    assert (await sign_in(db, chosen.email, "chosen password")).account_id is not None
