"""Who the CLI is to a controller: identity files in ``~/.config/slicemesh/``.

An identity holds a controller URL, the controller's public key and the user's own CURVE
key pair. ``slicemesh login`` writes one; ``slicemesh sim`` writes one for the cluster it
starts (and removes it when it stops), so a first run needs no ceremony. The CLI picks, in
order: ``$SLICEMESH_IDENTITY`` (a file), the identity whose controller is the URL asked for
(``--controller`` / ``$SLICEMESH_CONTROLLER``), then the current one (``current``).

    ~/.config/slicemesh/identities/<name>.yaml   mode 0600
    ~/.config/slicemesh/current                  the name of the current identity
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from slices.errors import SliceMeshError
from slices.transport import ClientKeys, Keypair, is_key

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class NoIdentity(SliceMeshError):
    code = "no-identity"


@dataclass(frozen=True)
class Identity:
    name: str
    controller: str
    server_key: str
    own: Keypair
    user: str = ""

    @property
    def keys(self) -> ClientKeys:
        return ClientKeys(self.server_key, self.own)

    def to_doc(self) -> dict[str, str]:
        return {"controller": self.controller, "server_key": self.server_key, "public": self.own.public, "secret": self.own.secret, "user": self.user}

    @classmethod
    def from_doc(cls, name: str, doc: object, source: str) -> Identity:
        if not isinstance(doc, dict):
            raise NoIdentity(f"{source}: not an identity file (expected a mapping)")
        missing = [k for k in ("controller", "server_key", "public", "secret") if not isinstance(doc.get(k), str)]
        if missing:
            raise NoIdentity(f"{source}: missing {', '.join(missing)}")
        for k in ("server_key", "public", "secret"):
            if not is_key(doc[k]):
                raise NoIdentity(f"{source}: {k} is not a CURVE key (40 z85 characters)")
        return cls(name, str(doc["controller"]), str(doc["server_key"]), Keypair(str(doc["public"]), str(doc["secret"])), str(doc.get("user", "")))


def config_dir() -> Path:
    env = os.environ.get("SLICEMESH_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "slicemesh"


def _dir() -> Path:
    return config_dir() / "identities"


def read(path: Path) -> Identity:
    try:
        text = path.read_text()
    except OSError as exc:
        raise NoIdentity(f"cannot read identity {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise NoIdentity(f"{path}: not valid YAML") from None
    return Identity.from_doc(path.stem, doc, str(path))


def write(identity: Identity, *, make_current: bool = True, path: Path | None = None) -> Path:
    """Save ``identity`` (mode 0600); by default it becomes the current one."""
    if path is None:
        if not NAME_RE.fullmatch(identity.name):
            raise NoIdentity(f"{identity.name!r} is not a valid identity name (letters, digits, . _ -)")
        path = _dir() / f"{identity.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(identity.to_doc(), sort_keys=True))
    os.replace(tmp, path)
    if make_current and path.parent == _dir():
        set_current(identity.name)
    return path


def set_current(name: str | None) -> None:
    current = config_dir() / "current"
    if name is None:
        current.unlink(missing_ok=True)
        return
    current.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    current.write_text(name + "\n")


def current_name() -> str | None:
    try:
        name = (config_dir() / "current").read_text().strip()
    except OSError:
        return None
    return name if NAME_RE.fullmatch(name) else None


def remove(name: str) -> None:
    (_dir() / f"{name}.yaml").unlink(missing_ok=True)
    if current_name() == name:
        set_current(None)


def all_identities() -> list[Identity]:
    out = []
    for path in sorted(_dir().glob("*.yaml")) if _dir().is_dir() else []:
        try:
            out.append(read(path))
        except NoIdentity:
            continue  # a broken file is reported when it is asked for by name
    return out


def resolve(url: str | None) -> Identity:
    """The identity to use for controller ``url`` (None: whatever is current)."""
    env = os.environ.get("SLICEMESH_IDENTITY")
    if env:
        ident = read(Path(env))
        return ident if url is None else Identity(ident.name, url, ident.server_key, ident.own, ident.user)
    if url is not None:
        for ident in all_identities():
            if ident.controller == url:
                return ident
    name = current_name()
    if name is not None:
        ident = read(_dir() / f"{name}.yaml")
        if url is None or ident.controller == url:
            return ident
        raise NoIdentity(
            f"no identity for {url} (the current one, {name}, is for {ident.controller}): "
            "run `slicemesh login --controller URL --key YOUR.key_secret --server-key controller.key`"
        )
    raise NoIdentity(
        "no identity: run `slicemesh login --controller URL --key YOUR.key_secret --server-key controller.key` "
        "(or start `slicemesh sim`, which writes one for its cluster)"
    )
