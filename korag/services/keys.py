"""API keys and the tenant each one belongs to.

Two sources: ``KORAG_API_KEYS="KEY=TENANT,..."`` (deployments set keys from their secret store)
and ``<data_dir>/keys.json``, written by ``korag keys add`` / ``revoke``. The file holds only
SHA-256 hashes of the keys (a key is 256 random bits, so a fast hash is enough), is written
atomically with mode 0600, and is re-read when it changes, so a running service sees a key added
or revoked from the command line. Tenant ``*`` is an admin key.

A ring that has seen a key stays :attr:`KeyRing.configured` when the last one goes (see there):
a service that asks for keys never turns open because keys.json was emptied or removed.

    ring = KeyRing.from_settings(settings)
    key_id, key = ring.add("acme")      # the key is shown once; only its hash is stored
    ring.tenant_for(key)                # "acme"; None for an unknown key
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from korag.errors import KoragError

log = logging.getLogger("korag.keys")
ADMIN_TENANT = "*"
KEY_PREFIX = "korag_"
FILE_NAME = "keys.json"
_FORMAT = 1


class KeyRingError(KoragError):
    """The key file or KORAG_API_KEYS cannot be read, or a key cannot be added or revoked."""


@dataclass(frozen=True)
class KeyInfo:
    """What ``korag keys list`` shows about a key: never the key, never its hash."""

    id: str
    tenant: str
    created_at: str | None  # ISO 8601, UTC; None for keys from KORAG_API_KEYS
    source: str = "file"  # "file" (keys.json) or "env" (KORAG_API_KEYS)

    @property
    def admin(self) -> bool:
        return self.tenant == ADMIN_TENANT

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "created_at": self.created_at, "source": self.source}


@dataclass(frozen=True)
class _Entry:
    info: KeyInfo
    digest: str  # hex SHA-256 of the key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_tenant_name(tenant: str) -> str:
    if not isinstance(tenant, str) or not tenant.strip():
        raise KeyRingError(f"tenant {tenant!r} is empty; give a name, e.g. --tenant acme (or * for an admin key)")
    if tenant != tenant.strip() or any(not c.isprintable() for c in tenant):
        raise KeyRingError(f"tenant {tenant!r} has surrounding spaces or unprintable characters")
    return tenant


def check_named_tenant(tenant: str) -> str:
    """A tenant an admin key names (``X-Korag-Tenant``): a tenant name, never ``*``, which names
    the admin role, not a tenant (documents stored under it would belong to no key)."""
    if tenant == ADMIN_TENANT:
        raise KeyRingError(f"{ADMIN_TENANT} is the admin role, not a tenant: name one tenant, or leave the header "
                           "out to reach every tenant")
    return check_tenant_name(tenant)


def parse_env_keys(text: str | None) -> list[_Entry]:
    """``"KEY=TENANT,KEY2=TENANT2"`` → entries. The last ``=`` splits, so a key may hold ``=``."""
    if text is None or not text.strip():
        return []
    entries = []
    for number, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        key, sep, tenant = item.rpartition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise KeyRingError(f"KORAG_API_KEYS item {number} is not KEY=TENANT (tenant * for an admin key)")
        if len(key) < 16:
            raise KeyRingError(f"KORAG_API_KEYS item {number}: the key has {len(key)} characters; use at least 16 "
                               "random characters (`korag keys add` makes 43)")
        digest = hash_key(key)
        entries.append(_Entry(KeyInfo(f"env-{digest[:8]}", check_tenant_name(tenant), None, "env"), digest))
    return entries


class KeyRing:
    """The keys a service accepts. Safe to share between threads; several processes may add and
    revoke keys in one file (a lock file serialises the writers)."""

    def __init__(self, path: Path, env_keys: str | None = None) -> None:
        self.path = Path(path)
        self._env = parse_env_keys(env_keys)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._file: list[_Entry] = []
        self._keyed = bool(self._env)  # a key was seen (or the file could not be read): see configured

    @classmethod
    def from_settings(cls, settings) -> "KeyRing":
        env = settings.api_keys.get_secret_value() if settings.api_keys is not None else None
        return cls(Path(settings.data_dir) / FILE_NAME, env)

    # -- reading --------------------------------------------------------------------------------
    @property
    def configured(self) -> bool:
        """Whether the service asks for a key: a key exists now, or one existed at any time since
        this ring was made (or keys.json could not be read). Sticky on purpose: revoking the last
        key, removing keys.json, or a rotation that revokes the old key before adding the new one
        must not turn a keyed service open. Only a ring that has never seen a key is unconfigured:
        the service then runs open (on loopback only) until a key is added. ``list()`` says which
        keys exist now."""
        self._entries()
        return self._keyed

    def tenant_for(self, key: str) -> str | None:
        """The tenant of ``key`` (``*``: admin), None for an unknown key. Every stored hash is
        compared in constant time, with no early exit, so timing says nothing about the keys."""
        if not isinstance(key, str) or not key:
            return None
        digest = hash_key(key)
        found = None
        for entry in self._entries():
            if hmac.compare_digest(entry.digest, digest):
                found = entry.info.tenant
        return found

    def list(self) -> list[KeyInfo]:
        """Every key, file keys in the order they were added, then KORAG_API_KEYS' keys."""
        return [entry.info for entry in self._entries()]

    def _entries(self) -> list[_Entry]:
        with self._lock:
            before = len(self._file) + len(self._env)
            self._refresh()
            entries = self._file + self._env
            if entries:
                self._keyed = True
            elif before:  # the drop to zero: said once
                log.warning("%s: the last API key is gone (revoked, or the file removed): every request is refused "
                            "with 401 until a key is added with `korag keys add --tenant T`", self.path)
            return entries

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._file = None, []
            return
        except OSError as exc:
            self._keyed = True  # keys we cannot read may exist: fail closed
            raise KeyRingError(f"{self.path}: cannot read the key file: {exc.strerror or exc}") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._file = _read(self.path)
            except KeyRingError:
                self._keyed = True  # a damaged file may hold keys: fail closed
                raise
            self._stamp = stamp

    # -- writing --------------------------------------------------------------------------------
    def add(self, tenant: str) -> tuple[str, str]:
        """A new key for ``tenant``: returns ``(key_id, key)``. The key is not stored, only its
        hash: show it to the user now, it cannot be shown again."""
        check_tenant_name(tenant)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        with self._writing() as entries:
            entries.append(_Entry(KeyInfo(key_id, tenant, created), hash_key(key)))
        return key_id, key

    def revoke(self, key_id: str) -> bool:
        """Remove a key from the file; False when no such key. A KORAG_API_KEYS key cannot be
        revoked here (remove it from the variable)."""
        if any(entry.info.id == key_id for entry in self._env):
            raise KeyRingError(f"key {key_id} comes from KORAG_API_KEYS; remove it there and restart the service")
        with self._writing() as entries:
            kept = [entry for entry in entries if entry.info.id != key_id]
            removed = len(kept) != len(entries)
            entries[:] = kept
        return removed

    @contextlib.contextmanager
    def _writing(self) -> Iterator[list[_Entry]]:
        """Read-modify-write under an exclusive lock on ``keys.json.lock``, then an atomic replace."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyRingError(f"{self.path}: cannot write the key file: {exc.strerror or exc} "
                               "(KORAG_DATA_DIR must be a writable directory)") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            entries = _read(self.path) if self.path.exists() else []
            yield entries
            _write(self.path, entries)
        finally:
            os.close(lock_fd)
        with self._lock:
            self._stamp = None  # re-read on next use


def _read(path: Path) -> list[_Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError('expected {"format": 1, "keys": [...]}')
        if data.get("format") != _FORMAT:
            raise ValueError(f"format {data.get('format')!r} is not {_FORMAT}: written by another korag version")
        entries = []
        for item in data["keys"]:
            digest = str(item["sha256"])
            if len(digest) != 64:
                raise ValueError(f"key {item.get('id')!r} has no SHA-256 hash")
            entries.append(_Entry(KeyInfo(str(item["id"]), str(item["tenant"]), item.get("created_at")), digest))
        return entries
    except OSError as exc:
        raise KeyRingError(f"{path}: cannot read the key file: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyRingError(f"{path}: the key file is damaged ({exc}); fix it, or delete it and add keys again "
                           "with `korag keys add --tenant T`") from exc


def _write(path: Path, entries: list[_Entry]) -> None:
    body = {"format": _FORMAT, "keys": [
        {"id": e.info.id, "tenant": e.info.tenant, "created_at": e.info.created_at, "sha256": e.digest}
        for e in entries
    ]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, ensure_ascii=False, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
