"""The client library: one request, one reply, with a deadline and retries.

A retry resends the *same* request id, so the controller answers it from its reply cache
instead of applying it twice. Attempts back off exponentially with jitter. The connection
is CURVE-authenticated with the caller's identity (``slices.identity``): the controller
knows who is asking from the key, not from anything in the request.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from slices.codec import BadBody, decode, encode, new_id
from slices.errors import ProtocolError, SliceMeshError
from slices.identity import Identity, resolve
from slices.memory import collector_paused
from slices.protocol import Error, ExecOutput, Message, Ok, Progress, WaitProgress, WaitSlice, result_of
from slices.transport import HARD_FRAME_CAP, Dealer, Poller


class RemoteError(SliceMeshError):
    """The controller answered with an error reply; ``details`` is its structured part."""

    def __init__(self, reason: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason, code=code, details=details)


class Inputs(Protocol):
    """What a caller feeds a running request from (``slices.cli_shell.InputPump``)."""

    def fds(self) -> list[int]: ...

    def ready(self, fd: int, request: str) -> list[Message]: ...


class Timeout(SliceMeshError):
    code = "timeout"


def default_url() -> str | None:
    """``$SLICEMESH_CONTROLLER``, or None: the current identity's controller."""
    return os.environ.get("SLICEMESH_CONTROLLER") or None


class Client:
    def __init__(self, url: str | None = None, *, identity: Identity | None = None, timeout: float = 10.0, first_try: float = 1.0) -> None:
        wanted = url or default_url()
        self.ident = identity or resolve(wanted)
        self.url = wanted or self.ident.controller
        self.timeout = timeout
        self.received = 0.0  # perf_counter when the last frame from the controller arrived (benchmarks split a call with it)
        self.first_try = first_try
        self.identity = self.ident.user or self.ident.name
        self.dealer = Dealer(self.url, self.identity, self.ident.keys)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.dealer.close()

    def call(
        self,
        msg: Message,
        *,
        timeout: float | None = None,
        retry: bool = True,
        on_output: Callable[[str, bytes], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        inputs: Inputs | None = None,
    ) -> Any:
        """Send ``msg`` and return its typed reply (``msg.REPLY``); raise ``RemoteError`` or ``Timeout``.

        ``retry=False`` sends once and waits the whole timeout (for requests that must not run
        twice, such as exec, or that wait on purpose); ``on_output`` receives streamed
        ``exec_output`` chunks, ``on_progress`` a waiting slice's ``wait_progress``;
        ``inputs``' descriptors are watched meanwhile and the notices they give are sent
        (an ``exec -i``'s stdin).
        """
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        msg_id = new_id()
        payload = encode(msg, id=msg_id, sender=self.identity)
        attempt_wait = self.first_try if retry else total
        attempts = 0
        while True:
            self.dealer.send(payload)
            attempts += 1
            attempt_end = min(deadline, time.monotonic() + attempt_wait)
            while (left := attempt_end - time.monotonic()) > 0:
                if not self._wait(left, inputs, msg_id):
                    continue
                frame = self.dealer.recv()
                if frame is None:
                    continue
                self.received = time.perf_counter()
                try:
                    with collector_paused():
                        env = decode(frame, max_bytes=HARD_FRAME_CAP)  # replies to trusted requests may be large
                except BadBody as exc:
                    if exc.msg_id == msg_id:
                        raise RemoteError(f"the controller's reply to {msg.TYPE} is malformed: {exc.reason}", code="protocol") from None
                    continue
                except ProtocolError as exc:
                    if getattr(exc, "msg_id", None) == msg_id:  # a version mismatch
                        raise RemoteError(exc.reason, code=exc.code) from None
                    continue
                if isinstance(env.msg, (ExecOutput, WaitProgress)):
                    if env.id == msg_id and isinstance(env.msg, ExecOutput) and on_output is not None:
                        on_output(env.msg.stream, env.msg.data)
                    if env.id == msg_id and isinstance(env.msg, WaitProgress) and on_progress is not None:
                        on_progress(env.msg.progress)
                    attempt_end = max(attempt_end, min(deadline, time.monotonic() + attempt_wait))
                    continue
                if env.id != msg_id:
                    continue  # a late reply to an earlier call
                if isinstance(env.msg, Ok):
                    try:
                        with collector_paused():
                            return result_of(msg, env.msg)
                    except ProtocolError as exc:
                        raise RemoteError(f"the controller's reply does not fit {msg.TYPE}: {exc.reason}", code="protocol") from None
                if isinstance(env.msg, Error):
                    raise RemoteError(env.msg.reason, code=env.msg.code, details=env.msg.details)
            if time.monotonic() >= deadline:
                raise Timeout(f"no reply from the controller at {self.url} after {attempts} tries ({timeout if timeout is not None else self.timeout:g}s); is it running?")
            attempt_wait = min(attempt_wait * 2, 8.0) * random.uniform(0.8, 1.2)

    def _wait(self, left: float, inputs: Inputs | None, msg_id: str) -> bool:
        """Until a frame from the controller is waiting (True) or ``left`` seconds pass; the
        inputs' notices (tagged with the request's id) are sent as their descriptors are ready."""
        fds = inputs.fds() if inputs is not None else []
        if inputs is None or not fds:
            return self.dealer.wait(left)
        poller = Poller()
        poller.add(self.dealer)
        for fd in fds:
            poller.add(fd)
        ready = poller.poll(left)
        for thing in ready:
            if isinstance(thing, int):
                for notice in inputs.ready(thing, msg_id):
                    if not self.dealer.send(encode(notice, id=new_id(), sender=self.identity)):
                        raise SliceMeshError(f"could not send input to the controller at {self.url}")
        return self.dealer in ready

    def wait(self, name: str, until: str, timeout: float, *, seen: int = 0, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Until slice ``name`` settles (``until: settled``), changes past ``seen`` (``change``) or
        is gone from every node (``deleted``), or ``timeout`` passes: told by the controller,
        not polled. A long wait is several requests of at most a minute each."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            part = min(left, 60.0)
            p: Progress = self.call(WaitSlice(name=name, until=until, seen=seen, timeout=part), timeout=part + self.timeout, retry=False, on_progress=on_progress)  # type: ignore[arg-type]
            if not p.timed_out or left <= part:
                return p
