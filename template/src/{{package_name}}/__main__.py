"""``python -m <package>``: serve the app with uvicorn, configured from settings."""

from __future__ import annotations

import uvicorn

from .main import create_app
from .settings import get_settings


def main() -> None:
    """Run one uvicorn worker; scale with more containers, not more workers per container."""
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our logging setup routes uvicorn's lines through structlog
        access_log=False,  # the request middleware writes one line per request instead
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
