"""What the two daemons share at start-up: logging, signals, dying with a parent."""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType

PR_SET_PDEATHSIG = 1


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask the loop to stop; the loop cleans up and returns."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("slicemesh").info("got %s; stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def die_with_parent() -> None:
    """Used as ``preexec_fn`` for children of ``slicemesh sim``: no orphan survives its parent."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
