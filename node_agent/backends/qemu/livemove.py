"""Live migration of one VM through QMP: the disk mirrored over NBD, then QEMU's pre-copy.

The way libvirt migrates a VM with local storage (``--copy-storage-all``), in QMP steps:

Target (``listen``): QEMU was started with ``-incoming defer`` (same machine, devices, RAM and
CPUs; the disk file exists with the same size). It serves its disk node (``disk0``) as a
writable NBD export on a TCP port, and waits for the migration stream on another port the
kernel picks (``query-migrate``'s ``socket-address``).

Source (``send``), over one QMP connection (QEMU takes one client at a time):

1. ``blockdev-add`` an NBD client of the target's export, ``blockdev-mirror`` the disk to it
   (``sync: full``, ``copy-mode: write-blocking``: once the copy has caught up, every guest
   write reaches both disks before it completes, so the target's disk is never behind), and
   wait until the job is ``ready``;
2. ``migrate`` RAM and devices (pre-copy, with the asked capabilities and downtime limit) and
   poll ``query-migrate`` until it completes, fails or runs past its timeout (then
   ``migrate_cancel``: the source runs on);
3. ``block-job-cancel`` the mirror (on a ready mirror: finish without switching to it).

Both streams are TLS with the move's one-time token as the pre-shared key (QEMU's
``tls-creds-psk`` objects, GnuTLS underneath): the target's NBD server and its incoming
migration accept only a peer that holds the token, and what crosses the network is encrypted.
Before, both ports took the first plaintext connection from anyone who could reach them: a
writable export of the guest's disk, and a stream that became the guest.

QEMU 7.2's ``blk`` block migration would do the disk in the migration stream with one QMP
call, but it buffers disk blocks without bound in the source QEMU, which its cgroup then
OOM-kills (seen here: a 128 MiB guest's QEMU killed at its 224 MiB limit mid-migration); it
is also deprecated from QEMU 8.2. The mirror's buffer is bounded (``MIRROR_BUFFER``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from node_agent.backends.qemu import qmp
from node_agent.backends.qemu.launcher import forget_psk
from slices.migration import MigrationReport, MoveOptions
from slices.statefile import open_new

POLL = 0.05
DISK_NODE = "disk0"  # the disk's node name (launcher.py), the export's name on the target
EXPORT = "slicemesh-move"
MIRROR_JOB = "slicemesh-mirror"
MIRROR_BUFFER = 4 << 20  # bytes of disk data in flight in the source QEMU
TLS_ID = "slicemesh-move-tls"  # the QEMU object holding the move's pre-shared key
PSK_USER = "slicemesh"  # the identity both sides name the key by
DROP_TLS = (("migrate-set-parameters", {"tls-creds": ""}), ("object-del", {"id": TLS_ID}))  # a move's credentials, once it is over


class MoveFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def write_psk(tls_dir: Path, token: str) -> None:
    """The move's token as QEMU's key file (GnuTLS's ``user:hexkey``), for root only."""
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    with open_new(tls_dir / "keys.psk", 0o600) as f:
        f.write(f"{PSK_USER}:{token}\n".encode())


async def _tls(client: QMPClient, endpoint: str, tls_dir: Path) -> None:
    """This QEMU's TLS credentials for the move: the key file in ``tls_dir``. A client reads
    its key when the object is made, so an earlier attempt's object is replaced."""
    with contextlib.suppress(QMPError):  # none yet
        await client.execute("object-del", {"id": TLS_ID})
    args: dict[str, Any] = {"qom-type": "tls-creds-psk", "id": TLS_ID, "endpoint": endpoint, "dir": str(tls_dir)}
    if endpoint == "client":
        args["username"] = PSK_USER
    await client.execute("object-add", args)


def listen(sock: Path, token: str, tls_dir: Path, timeout: float = 10.0) -> tuple[int, int]:
    """Make the incoming QEMU behind ``sock`` wait for the migration and serve its disk, both
    over TLS keyed by ``token``; (migration port, disk port)."""

    async def body(client: QMPClient) -> tuple[int, int]:
        await _tls(client, "server", tls_dir)
        for attempt in range(5):  # the free port may be taken before QEMU binds it
            disk_port = _free_port()
            try:
                await client.execute("nbd-server-start", {"addr": {"type": "inet", "data": {"host": "0.0.0.0", "port": str(disk_port)}}, "tls-creds": TLS_ID})
                break
            except QMPError:
                if attempt == 4:
                    raise
        await client.execute("block-export-add", {"type": "nbd", "id": EXPORT, "node-name": DISK_NODE, "name": DISK_NODE, "writable": True})
        await client.execute("migrate-set-parameters", {"tls-creds": TLS_ID})
        await client.execute("migrate-incoming", {"uri": "tcp:0.0.0.0:0"})
        info = await client.execute("query-migrate")
        for addr in info.get("socket-address", []) if isinstance(info, dict) else []:
            if isinstance(addr, dict) and str(addr.get("port", "")).isdigit():
                return int(addr["port"]), disk_port
        raise MoveFailed(f"the incoming QEMU did not say which port it listens on ({info})")

    write_psk(tls_dir, token)
    try:
        return qmp.session(sock, body, timeout, "listen")
    except BaseException:
        forget_psk(tls_dir)
        raise


def arrived(sock: Path, tls_dir: Path, timeout: float = 5.0) -> None:
    """The target runs the guest: stop serving its disk, and forget the move's key."""

    async def body(client: QMPClient) -> None:
        for command, args in (("block-export-del", {"id": EXPORT}), ("nbd-server-stop", None), *DROP_TLS):
            with contextlib.suppress(QMPError):  # gone already (a second look after an agent restart)
                await client.execute(command, args)

    try:
        qmp.session(sock, body, timeout, "nbd-server-stop")
    finally:
        forget_psk(tls_dir)


def run_state(sock: Path, timeout: float = 2.0) -> str:
    """QEMU's run state: ``inmigrate`` while a target waits, ``running`` once it resumed."""
    return qmp.status(sock, timeout)


def _capabilities(options: MoveOptions) -> list[dict[str, Any]]:
    return [{"capability": "auto-converge", "state": options.auto_converge}, {"capability": "xbzrle", "state": options.xbzrle}]


def report(info: dict[str, Any], disk_bytes: int, phase: str = "sent") -> MigrationReport:
    """A ``query-migrate`` answer (and the bytes the mirror copied) as the project's record."""
    ram = info.get("ram") or {}
    ram_bytes = int(ram.get("transferred", 0))
    return MigrationReport(
        phase=phase,
        kind="live",
        total_ms=float(info.get("total-time", 0)),
        downtime_ms=float(info.get("downtime", 0)),
        bytes=ram_bytes + disk_bytes,
        ram_bytes=ram_bytes,
        disk_bytes=disk_bytes,
        dirty_rate=float(ram.get("dirty-pages-rate", 0)),
        passes=int(ram.get("dirty-sync-count", 0)),
    )


async def _job(client: QMPClient) -> dict[str, Any] | None:
    jobs = await client.execute("query-block-jobs")
    for job in jobs if isinstance(jobs, list) else []:
        if isinstance(job, dict) and job.get("device") == MIRROR_JOB:
            return job
    return None


async def _mirror(client: QMPClient, disk: str, deadline: float) -> int:
    """Mirror the disk to the target's export until ready; bytes copied so far."""
    host, _, port = disk.rpartition(":")
    await client.execute(
        "blockdev-add", {"driver": "nbd", "node-name": "slicemesh-target", "server": {"type": "inet", "host": host, "port": port}, "export": DISK_NODE, "tls-creds": TLS_ID}
    )
    await client.execute(
        "blockdev-mirror",
        {"job-id": MIRROR_JOB, "device": "disk", "target": "slicemesh-target", "sync": "full", "copy-mode": "write-blocking", "buf-size": MIRROR_BUFFER, "auto-dismiss": False},
    )
    while True:
        job = await _job(client)
        if job is None or job.get("status") == "concluded":
            raise MoveFailed(f"mirroring the disk failed: {(job or {}).get('error', 'the job ended')}")
        if job.get("ready"):
            return int(job.get("offset", 0))
        if time.monotonic() > deadline:
            raise MoveFailed("mirroring the disk did not catch up in time")
        await asyncio.sleep(POLL)


async def _end_mirror(client: QMPClient) -> int:
    """Finish the mirror without switching to it (the target has every write); bytes copied."""
    offset = 0
    with contextlib.suppress(QMPError):  # no job to end
        job = await _job(client)
        offset = int((job or {}).get("offset", 0))
        if job is not None and job.get("status") != "concluded":
            await client.execute("block-job-cancel", {"device": MIRROR_JOB})
        for _ in range(100):
            job = await _job(client)
            if job is None or job.get("status") == "concluded":
                break
            await asyncio.sleep(POLL)
        await client.execute("job-dismiss", {"id": MIRROR_JOB})
    with contextlib.suppress(QMPError):  # no NBD client to remove (the mirror never started)
        await client.execute("blockdev-del", {"node-name": "slicemesh-target"})
    return offset


async def _under_way(client: QMPClient) -> bool:
    """An agent that restarted during a migration finds QEMU still at it, or done with it (the
    guest paused in ``postmigrate``): it watches that one instead of starting another. (A VM
    that arrived by migration also says ``completed``, but it runs.)"""
    now = await client.execute("query-migrate")
    status = now.get("status") if isinstance(now, dict) else None
    if status in ("active", "device", "pre-switchover"):
        return True
    if status == "completed":
        state = await client.execute("query-status")
        return isinstance(state, dict) and state.get("status") == "postmigrate"
    return False


def send(sock: Path, endpoint: str, disk: str, options: MoveOptions, token: str, tls_dir: Path) -> MigrationReport:
    """Migrate the VM behind ``sock``: its disk to the NBD export at ``disk``, then RAM and
    devices to ``endpoint`` (both ``host:port``, both over TLS keyed by ``token``); its
    report (phase ``sent``), or MoveFailed with QEMU's reason (the VM runs on here)."""

    async def migrate(client: QMPClient) -> tuple[dict[str, Any], int]:
        deadline = time.monotonic() + options.timeout
        try:
            if not await _under_way(client):
                await _tls(client, "client", tls_dir)
                await _mirror(client, disk, deadline)
                await client.execute("migrate-set-capabilities", {"capabilities": _capabilities(options)})
                await client.execute("migrate-set-parameters", {"downtime-limit": options.downtime_ms, "tls-creds": TLS_ID})
                await client.execute("migrate", {"uri": f"tcp:{endpoint}"})
            while True:
                got = await client.execute("query-migrate")
                info: dict[str, Any] = got if isinstance(got, dict) else {}
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    await client.execute("migrate_cancel")
                    info = {"status": "timeout"}
                    break
                await asyncio.sleep(POLL)
        finally:
            copied = await _end_mirror(client)
            for command, args in DROP_TLS:
                with contextlib.suppress(QMPError):  # not made (the attempt failed before)
                    await client.execute(command, args)
        return info, copied

    write_psk(tls_dir, token)
    try:
        info, copied = qmp.session(sock, migrate, options.timeout + 30.0, "migrate")
    except qmp.QmpError as exc:
        cancel(sock)
        raise MoveFailed(str(exc)) from None
    finally:
        forget_psk(tls_dir)
    status = info.get("status")
    if status == "completed":
        return report(info, copied)
    if status == "timeout":
        raise MoveFailed(f"the migration did not converge within {options.timeout:g} s (try --auto-converge or --xbzrle); cancelled")
    raise MoveFailed(f"QEMU says the migration {status}: {info.get('error-desc', 'no reason given')}")


def cancel(sock: Path) -> None:
    with contextlib.suppress(qmp.QmpError):  # QEMU is gone: nothing to cancel
        qmp.execute(sock, [("migrate_cancel", None)], 5.0)


def resume(sock: Path) -> None:
    """Run a source VM again that a completed migration left paused (the target failed)."""
    qmp.execute(sock, [("cont", None)], 5.0)
