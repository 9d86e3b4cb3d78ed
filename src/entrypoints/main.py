from __future__ import annotations

import logging

import uvicorn

from entrypoints.settings import Settings

__all__ = ["main"]


def main() -> None:
    """Run the gateway with uvicorn (console script ``object-gateway``)."""
    settings = Settings.from_environ()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        "entrypoints.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # One process: the upload memory budget and the discovery cache are per process.
        workers=1,
    )


if __name__ == "__main__":
    main()
