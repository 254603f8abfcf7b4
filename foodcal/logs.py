"""One logging setup for every service: one line per event."""

import logging


def setup_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # httpx logs every request line at INFO; the labeler logs its own summary instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
