"""Run the ingest service alone: ``python -m services.ingest`` (settings from the environment).

``segments run ingest`` does the same; this entry point needs none of the other services'
modules, which suits tests and benchmarks of ingest on its own.
"""

from __future__ import annotations

import uvicorn

from services.ingest.app import create_app
from shared.settings import load_settings


def main() -> None:
    """Serve ingest on ``settings.host:settings.ingest_port`` until stopped."""
    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.ingest_port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
