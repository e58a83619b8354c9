"""``slicemesh create`` with ``code: {path: ...}``: pack, hash and upload the bundle first, then
send the spec with its digest instead of the path (slices/bundle.py, docs/code.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slices import bundle
from slices.client import Client
from slices.protocol import UploadCode
from slices.protocol.code import CHUNK


def upload(c: Client, data: bytes) -> tuple[str, int]:
    """Send ``data`` to the controller's content store, resuming from what it already has;
    (digest, bytes sent)."""
    digest, size = bundle.digest(data), len(data)
    state = c.call(UploadCode(digest=digest, size=size))
    sent = 0
    while not state.complete:
        offset = state.have
        chunk = data[offset : offset + CHUNK]
        state = c.call(UploadCode(digest=digest, size=size, offset=offset, data=chunk))
        sent += len(chunk)
    return digest, sent


def resolve(c: Client, doc: dict[str, Any], spec_path: str) -> dict[str, Any]:
    """The spec document with ``code.path`` replaced by the uploaded bundle's digest and size."""
    code = doc.get("code")
    if not isinstance(code, dict) or "path" not in code:
        return doc
    base = Path(spec_path).parent if spec_path not in ("-", "") else Path.cwd()
    data = bundle.load((base / str(code["path"])).expanduser())
    digest, _ = upload(c, data)
    rest = {k: v for k, v in code.items() if k != "path"}
    return {**doc, "code": {**rest, "digest": digest, "size": len(data)}}
