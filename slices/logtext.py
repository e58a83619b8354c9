"""Lines of sliver output for ``slicemesh logs``: the last N lines, and lines prefixed by node; pure.

Agents keep output as bytes and hand out byte ranges (``sliver_logs``); people count lines
(``--tail 20``). ``last_lines`` says whether a range from the end holds enough of them, so the
CLI asks for a larger range only when it must, up to a byte cap.
"""

from __future__ import annotations


def last_lines(data: bytes, n: int, *, from_start: bool) -> bytes | None:
    """The last ``n`` lines of ``data`` (the end of a log; a final line without a newline
    counts), or None when ``data`` may hold fewer than ``n`` whole lines because it does not
    reach back to the log's start (``from_start``): then a larger range is needed."""
    if n <= 0:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(n):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data if from_start else None
    return data[cut + 1 :]


def whole_lines(data: bytes, *, from_start: bool) -> bytes:
    """``data`` without its first line when that line may be cut (the range starts mid-log)."""
    if from_start:
        return data
    first = data.find(b"\n")
    return data[first + 1 :] if first >= 0 else b""


class Prefixer:
    """Puts ``prefix`` before each line of a stream that arrives in chunks: a line cut
    between two chunks gets one prefix, and a partial last line waits for its end."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.partial + chunk
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        return b"".join(self.prefix + line for line in data[:end].splitlines(keepends=True))

    def flush(self) -> bytes:
        """The partial last line, ended, at the end of output."""
        rest, self.partial = self.partial, b""
        return self.prefix + rest + b"\n" if rest else b""


def prefixes(targets: list[tuple[str, str]]) -> dict[str, bytes]:
    """Each sliver's prefix (sliver id -> ``[node] ``): its node, and the sliver's id too where
    a node holds more than one of the slice's slivers. ``targets``: (sliver, node) pairs."""
    nodes = [node for _, node in targets]
    return {sid: (f"[{node}] " if nodes.count(node) == 1 else f"[{node}/{sid}] ").encode() for sid, node in targets}


__all__ = ["Prefixer", "last_lines", "prefixes", "whole_lines"]
