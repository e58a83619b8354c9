"""The loop's waker: a wake that races a close is a no-op, never a write to a reused fd.

This was ``test_lease_expiry_and_renew``'s one-in-ten EBADF (``AgentHost.stop`` after the host
loop had closed its waker): harmless in a test, but in a long-running agent the same number
may by then belong to another file, and the wake would have written 8 bytes into it.
"""

from __future__ import annotations

import os
import threading

from node_agent.worker import ThreadExecutor
from slices.transport import Waker


def test_wake_after_close_is_a_no_op_and_never_touches_a_reused_fd(tmp_path: object) -> None:
    w = Waker()
    number = w.fd
    w.close()
    r, wr = os.pipe()  # the kernel hands out the lowest free number: very likely the waker's
    try:
        w.wake()
        w.close()  # a second close is a no-op too
        os.set_blocking(r, False)
        leaked = b""
        try:
            leaked = os.read(r, 64)
        except BlockingIOError:
            pass
        assert leaked == b"", f"a closed waker wrote into fd {number}, now someone else's"
    finally:
        os.close(r)
        os.close(wr)


def test_wakes_racing_a_close_from_other_threads() -> None:
    for _ in range(200):
        w = Waker()
        go = threading.Barrier(3)

        def waker(w: Waker = w, go: threading.Barrier = go) -> None:
            go.wait()
            for _ in range(50):
                w.wake()

        threads = [threading.Thread(target=waker) for _ in range(2)]
        for t in threads:
            t.start()
        go.wait()
        w.close()
        for t in threads:
            t.join()


def test_a_result_posted_after_the_executor_closed_is_dropped_quietly() -> None:
    ex = ThreadExecutor("t")
    ex.close()
    ex.post(lambda: None)  # an exec thread finishing after the agent stopped
