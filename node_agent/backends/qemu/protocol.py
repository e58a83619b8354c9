"""The host side of the guest agent's framing (guest/agent.c is the other side); pure.

A frame is a 12-byte big-endian header and a payload of at most 16 KiB:

    u16 magic 0x534D ("SM")  u8 type  u8 flags  u32 channel  u32 length  | payload

Channel 0 is the connection itself; each exec gets its own channel, chosen by the host, so
several execs share the one connection QEMU allows on a virtio-serial port. Types (host ->
guest below 0x80, guest -> host from 0x80):

    HELLO      0x01  ch 0   opaque nonce; starts a connection, ends every earlier session
    EXEC       0x02  ch N   u32 argc, u32 envc, then argc + envc NUL-terminated strings
                            (argv, then KEY=VALUE overrides); flag 0x01: stdin will follow
    STDIN      0x03  ch N   bytes for the command's stdin; an empty payload closes it
    SIGNAL     0x04  ch N   u32 signal number, sent to the command's process group
    STAT       0x05  ch N   asks for the guest's /proc/meminfo
    HELLO_ACK  0x81  ch 0   the HELLO's nonce, echoed: everything after it is this connection's
    STDOUT     0x82  ch N   output as the command writes it
    STDERR     0x83  ch N
    EXIT       0x84  ch N   i32 exit code (128 + signal when killed); the channel is free again
    ERROR      0x85  ch N   a reason (text) the agent refused or failed a request; EXIT follows
    STAT_REPLY 0x86  ch N   /proc/meminfo text

Room to grow: flags are zero except EXEC's stdin flag; unknown types get an ERROR reply, so
a newer host learns what an older agent lacks (e.g. a window frame for stdin flow control).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = 0x534D
HEADER = struct.Struct(">HBBII")
MAX_PAYLOAD = 16384
FLAG_STDIN = 0x01


class T(IntEnum):
    HELLO = 0x01
    EXEC = 0x02
    STDIN = 0x03
    SIGNAL = 0x04
    STAT = 0x05
    HELLO_ACK = 0x81
    STDOUT = 0x82
    STDERR = 0x83
    EXIT = 0x84
    ERROR = 0x85
    STAT_REPLY = 0x86


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class Frame:
    type: int
    channel: int
    payload: bytes = b""
    flags: int = 0


def encode(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(frame.payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, frame.type, frame.flags, frame.channel, len(frame.payload)) + frame.payload


class Decoder:
    """Turns a byte stream into frames; a bad header means the stream is out of step for good."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            magic, ftype, flags, channel, length = HEADER.unpack_from(self._buf)
            if magic != MAGIC or length > MAX_PAYLOAD:
                raise ProtocolError(f"bad frame header {bytes(self._buf[: HEADER.size]).hex()}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(Frame(ftype, channel, bytes(self._buf[HEADER.size : end]), flags))
            del self._buf[:end]
        return out


def exec_payload(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    """EXEC's payload; it must fit one frame (argv and env of a command line do)."""
    if not argv:
        raise ProtocolError("exec needs a command")
    items = [*argv, *(f"{k}={v}" for k, v in (env or {}).items())]
    if any("\0" in s for s in items):
        raise ProtocolError("arguments and environment cannot contain NUL bytes")
    body = struct.pack(">II", len(argv), len(env or {})) + b"".join(s.encode() + b"\0" for s in items)
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError(f"command and environment take {len(body)} bytes; at most {MAX_PAYLOAD}")
    return body


def stdin_frames(channel: int, data: bytes, *, close: bool) -> list[Frame]:
    """``data`` as STDIN frames, then the empty one that closes stdin when ``close``."""
    frames = [Frame(T.STDIN, channel, data[i : i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD)]
    return [*frames, Frame(T.STDIN, channel)] if close else frames


def exit_code(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError("EXIT payload must be 4 bytes")
    code: int = struct.unpack(">i", payload)[0]
    return code


def signal_payload(signo: int) -> bytes:
    return struct.pack(">I", signo)


def meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field (``MemTotal: 94688 kB`` -> {"MemTotal": 96960512})."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key.strip()] = int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return out
