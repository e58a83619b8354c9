"""``slicemesh controller``: run the central service until SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path

from controller.server import Server
from controller.settings import ControllerSettings
from slices.daemon import on_signals, setup_logging
from slices.statefile import write_atomic_text

log = logging.getLogger("slicemesh.controller")


def run(settings: ControllerSettings, *, ready_file: str | None = None) -> int:
    setup_logging(settings.log_level)
    server = Server(settings)
    on_signals(server.stop)
    server.collector.take_over()
    if ready_file:
        write_atomic_text(Path(ready_file), server.url + "\n")
    server.serve_forever()
    log.info("controller stopped")
    return 0
