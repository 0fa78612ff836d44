"""Device identity for real fleets: who may hold a token for which device id, and revocation.

A device reaches the routing proxy with a bearer token (:mod:`redfl.edge.tokens`) whose
subject is its device id. How it gets one is the tree's enrolment mode (``[enrollment]`` of
``edge.toml`` in the provisioning folder, :class:`EnrollmentConfig`):

``issued`` (the default)
    Tokens are issued in advance, one per device id, by the operator
    (``redfl edge devices issue --tree DIR (--ids FILE | --count N) --out FILE``) and put on
    the devices out of band; ``/enroll`` is closed.
``verifier``
    A device enrols with its id and a credential of the operator's choosing (a serial number
    and a signed attestation, a one-time code, ...). The operator's function
    ``enroll_verifier = "MODULE:FUNCTION"`` approves each request:
    ``FUNCTION(device_id, credential) -> bool`` (or a coroutine function); it runs off the
    proxy's event loop. The first approved credential *binds* the id: another credential
    claiming the same id later is refused, whatever the verifier says.
``shared-secret`` (development only)
    Whoever holds the tree's enrolment secret (``edge_secrets.json``) may enrol as any device
    id. Nothing is bound; use it on a laptop, never for a fleet.

Every token is checked against the *device register* (``devices.jsonl`` in the folder, mode
0600): in ``issued`` and ``verifier`` modes a device must be in it, and in every mode a
revoked device (``redfl edge devices revoke``) is refused, as is any token issued before the
device's current credential (a token from before a revocation and a new issue, say). The
register is an append-only log of events (``issue``, ``bind``, ``revoke``), each one JSON
line, written under an exclusive lock by the proxy and the ``devices`` commands; the proxy
looks at the file (one ``stat``) on every request and reads the lines added since, so a
revocation applies from the next request on. Credentials are kept only as keyed digests
(HMAC-SHA256 under the token secret), never in clear.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import inspect
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from redfl.core.config import IMPORT_TARGET, TARGET_PATTERN, ConfigError, Strict, load_toml
from redfl.core.imports import resolve
from redfl.edge.errors import Unauthorized
from redfl.edge.provision import load_or_create_secrets
from redfl.edge.tokens import TokenError, TokenSigner, secret_matches

__all__ = [
    "DEVICES",
    "EDGE_CONFIG",
    "DeviceRecord",
    "DeviceRegister",
    "EdgeConfig",
    "EnrollmentConfig",
    "Fleet",
    "load_edge_config",
]

EDGE_CONFIG = "edge.toml"
"""The edge settings of a provisioning folder."""
DEVICES = "devices.jsonl"
"""The device register of a provisioning folder."""

Mode = Literal["issued", "verifier", "shared-secret"]
Verify = Callable[[str, str], bool | Awaitable[bool]]
"""The operator's enrolment verifier: ``(device_id, credential) -> approved``."""

log = logging.getLogger(__name__)


class EnrollmentConfig(Strict):
    """``[enrollment]``: how devices get their tokens (see the module docstring)."""

    mode: Mode = "issued"
    """``issued`` (tokens issued in advance), ``verifier`` (the operator's function approves
    each enrolment) or ``shared-secret`` (development only)."""
    enroll_verifier: str | None = Field(
        default=None, pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET
    )
    """``MODULE:FUNCTION`` approving an enrolment (``verifier`` mode only)."""
    token_hours: float = Field(default=24.0, gt=0.0, le=24.0 * 366)
    """Lifetime of a token from ``/enroll``."""
    issued_days: float = Field(default=365.0, gt=0.0, le=3650.0)
    """Lifetime of a token issued in advance."""

    @model_validator(mode="after")
    def _verifier(self) -> EnrollmentConfig:
        if self.mode == "verifier" and self.enroll_verifier is None:
            raise ValueError("mode 'verifier' needs enroll_verifier = 'MODULE:FUNCTION'")
        if self.mode != "verifier" and self.enroll_verifier is not None:
            raise ValueError(f"enroll_verifier is only for mode 'verifier', not {self.mode!r}")
        return self


class EdgeConfig(Strict):
    """``edge.toml``: the edge deployment's settings."""

    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)


def load_edge_config(tree_dir: Path) -> EdgeConfig:
    """Read ``tree_dir/edge.toml`` (defaults when there is none).

    Raises
    ------
    ConfigError
        Naming the file and the field at fault, and what is allowed.
    """
    path = Path(tree_dir) / EDGE_CONFIG
    if not path.exists():
        return EdgeConfig()
    return load_toml(path, EdgeConfig, str(path))


@dataclass(frozen=True)
class DeviceRecord:
    """A device as the register holds it.

    Attributes
    ----------
    device : str
        Its id.
    credential : str
        ``"issued"`` (a token issued in advance) or the digest of the credential it enrolled
        with.
    since : float
        When that credential was issued or bound (Unix seconds); older tokens are refused.
    revoked : tuple[float, str] | None
        When and why it was revoked, if it was.
    """

    device: str
    credential: str
    since: float
    revoked: tuple[float, str] | None = None

    @property
    def active(self) -> bool:
        """Whether it holds a credential that is not revoked."""
        return self.revoked is None


class DeviceRegister:
    """The device register: an append-only JSON-lines log, read incrementally.

    Parameters
    ----------
    path : Path
        The log file; created (mode 0600) when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
        self._records: dict[str, DeviceRecord] = {}
        self._file: tuple[int, int] | None = None  # inode, bytes read
        self._lock = threading.Lock()

    def get(self, device: str) -> DeviceRecord | None:
        """The device's record as the file holds it now (None: never issued or bound)."""
        self.refresh()
        return self._records.get(device)

    def known(self, device: str) -> DeviceRecord | None:
        """The device's record as last read (inside :meth:`append`'s ``events``: as the
        file holds it, every other writer's events included)."""
        return self._records.get(device)

    def refresh(self) -> None:
        """Read the events appended since the last read (all of them if the file was
        replaced)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return  # keep what was read: a missing register is a misconfiguration, not a wipe
        with self._lock:
            if self._file is not None and self._file == (info.st_ino, info.st_size):
                return
            start = 0
            if self._file is not None and self._file[0] == info.st_ino:
                start = self._file[1]
            if start == 0:
                self._records = {}
            with open(self.path, "rb") as handle:
                handle.seek(start)
                data = handle.read()
            end = data.rfind(b"\n") + 1  # complete lines only
            for line in data[:end].splitlines():
                if line.strip():
                    self._apply(json.loads(line))
            self._file = (info.st_ino, start + end)

    def _apply(self, event: dict[str, Any]) -> None:
        device, at = str(event["device"]), float(event["at"])
        if event["op"] == "revoke":
            old = self._records.get(device)
            credential, since = (old.credential, old.since) if old else ("", at)
            self._records[device] = DeviceRecord(device, credential, since, (at, str(event["why"])))
        else:  # issue or bind: a new credential
            self._records[device] = DeviceRecord(device, str(event["credential"]), at)

    def append(self, events: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Append the events ``events()`` returns, computed under the file's exclusive lock
        after reading everything appended before (so its checks see every other writer)."""
        with open(self.path, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self.refresh()
                made = events()
                if made:
                    handle.write(b"".join(json.dumps(e).encode() + b"\n" for e in made))
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        self.refresh()
        return made

    def check(self, device: str, issued: float, required: bool) -> None:
        """Refuse a token of ``device`` issued at ``issued``.

        Raises
        ------
        TokenError
            ``device ... is not enrolled`` (when ``required``), ``... was revoked``, or
            ``token issued before the device's current credential``.
        """
        record = self.get(device)
        if record is None:
            if required:
                raise TokenError(f"device {device!r} is not enrolled in this fleet")
            return
        if record.revoked is not None:
            when, why = record.revoked
            raise TokenError(f"device {device!r} was revoked at {_utc(when)}: {why}")
        if issued < record.since:
            raise TokenError("token issued before the device's current credential")


class Fleet:
    """The proxy's side of device identity: enrolment in the tree's mode, token checks
    against the register, and issue and revocation for the ``devices`` commands.

    Parameters
    ----------
    signer : TokenSigner
        Issues and verifies the tokens.
    register : DeviceRegister
        The device register.
    config : EnrollmentConfig
        The enrolment mode and lifetimes.
    dev_secret : str
        The enrolment secret of ``shared-secret`` mode.
    verifier : Verify | None
        The operator's function (``verifier`` mode).
    """

    def __init__(
        self,
        signer: TokenSigner,
        register: DeviceRegister,
        config: EnrollmentConfig,
        dev_secret: str = "",
        verifier: Verify | None = None,
    ) -> None:
        if config.mode == "verifier" and verifier is None:
            raise ValueError("verifier mode needs the operator's enroll_verifier function")
        self.signer, self.register, self.config = signer, register, config
        self.dev_secret, self.verifier = dev_secret, verifier
        self._key = signer.derive_key(b"redfl-device-credential")

    @classmethod
    def of_tree(cls, tree_dir: Path) -> Fleet:
        """The fleet of a provisioning folder: ``edge.toml``, ``edge_secrets.json`` (made
        when missing) and ``devices.jsonl``.

        Raises
        ------
        ConfigError
            For a bad ``edge.toml``, or an ``enroll_verifier`` that cannot be imported.
        ValueError
            For malformed edge secrets.
        """
        config = load_edge_config(tree_dir).enrollment
        secrets = load_or_create_secrets(tree_dir)
        signer = TokenSigner(bytes.fromhex(secrets.token_secret), ttl=config.token_hours * 3600)
        verifier = None
        if config.enroll_verifier is not None:
            found = resolve(config.enroll_verifier, "enrollment.enroll_verifier")
            if not callable(found):
                raise ConfigError(
                    f"{Path(tree_dir) / EDGE_CONFIG}: enrollment.enroll_verifier: "
                    f"{config.enroll_verifier!r} is not a function"
                )
            verifier = found
        register = DeviceRegister(Path(tree_dir) / DEVICES)
        return cls(signer, register, config, secrets.enroll_secret, verifier)

    @property
    def required(self) -> bool:
        """Whether a device must be in the register (every mode but ``shared-secret``)."""
        return self.config.mode != "shared-secret"

    def verify(self, token: str) -> str:
        """The device id of a valid token of a device in good standing.

        Raises
        ------
        TokenError
            For a missing, forged or expired token, or a device not enrolled or revoked.
        """
        claims = self.signer.claims(token)
        self.register.check(claims.device, claims.issued, self.required)
        return claims.device

    async def enroll(self, device: str, credential: str) -> tuple[str, float]:
        """A token for ``device`` and its expiry, if the mode admits it with ``credential``.

        Raises
        ------
        Unauthorized
            Naming why: enrolment closed (``issued``), a bad development secret, an id
            bound to another credential or revoked, or the operator's verifier refusing.
        """
        mode = self.config.mode
        if mode == "issued":
            raise Unauthorized(
                "enrolment is closed: this fleet's device tokens are issued in advance "
                "('redfl edge devices issue')"
            )
        if mode == "shared-secret":
            if not secret_matches(credential, self.dev_secret):
                raise Unauthorized("bad enrollment secret")
            self._standing(self.register.get(device), device, None)
            return self.signer.issue(device)
        digest = self._digest(device, credential)
        self._standing(self.register.get(device), device, digest)
        if not await self._approved(device, credential):
            raise Unauthorized(f"the operator's verifier refused device {device!r}")
        now = self.signer.clock()

        def bind() -> list[dict[str, Any]]:
            record = self.register.known(device)
            self._standing(record, device, digest)
            if record is not None and record.credential == digest:
                return []
            return [{"op": "bind", "device": device, "credential": digest, "at": now}]

        await asyncio.to_thread(self.register.append, bind)  # a locked, synced write
        return self.signer.issue(device)

    def _standing(self, record: DeviceRecord | None, device: str, digest: str | None) -> None:
        """Refuse a revoked device, or one bound to another credential than ``digest``."""
        if record is None:
            return
        if record.revoked is not None:
            when, why = record.revoked
            raise Unauthorized(f"device {device!r} was revoked at {_utc(when)}: {why}")
        if digest is not None and record.credential != digest:
            raise Unauthorized(f"device id {device!r} is enrolled with another credential")

    async def _approved(self, device: str, credential: str) -> bool:
        """The operator's verdict; a verifier that raises refuses (and is logged)."""
        verify = self.verifier
        assert verify is not None
        try:
            if inspect.iscoroutinefunction(verify):
                verdict = await verify(device, credential)
            else:
                verdict = await asyncio.to_thread(verify, device, credential)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
        except Exception:
            log.exception("the enroll_verifier raised for device %r", device)
            return False
        return verdict is True

    def _digest(self, device: str, credential: str) -> str:
        message = device.encode() + b"\0" + credential.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, devices: Iterable[str], days: float | None = None) -> dict[str, str]:
        """Issue a token in advance to each device id; none is issued if one of the ids
        already holds a credential that is not revoked.

        Raises
        ------
        ValueError
            Naming the ids that already hold a credential (revoke them first), or given
            twice.
        """
        ids = list(devices)
        repeated = sorted(d for d, n in Counter(ids).items() if n > 1)
        if repeated:
            raise ValueError(f"device ids given twice: {', '.join(repeated[:5])}")
        lifetime = (days if days is not None else self.config.issued_days) * 86_400.0
        now = self.signer.clock()

        def events() -> list[dict[str, Any]]:
            held = [d for d in ids if (r := self.register.known(d)) is not None and r.active]
            if held:
                more = f" and {len(held) - 5} more" if len(held) > 5 else ""
                raise ValueError(
                    f"{', '.join(held[:5])}{more} already hold a credential: revoke them "
                    "first ('redfl edge devices revoke')"
                )
            return [{"op": "issue", "device": d, "credential": "issued", "at": now} for d in ids]

        self.register.append(events)
        return {d: self.signer.issue(d, ttl=lifetime)[0] for d in ids}

    def revoke(self, devices: Iterable[str], reason: str) -> list[str]:
        """Revoke devices: their tokens are refused from the next request on, and the ids
        cannot enrol again until issued anew.

        Raises
        ------
        ValueError
            If the reason is empty, or an id is unknown or already revoked.
        """
        ids = list(dict.fromkeys(devices))
        if not reason.strip():
            raise ValueError("give a reason for the revocation")
        now = self.signer.clock()

        def events() -> list[dict[str, Any]]:
            records = {d: self.register.known(d) for d in ids}
            unknown = [d for d, r in records.items() if r is None]
            if unknown:
                raise ValueError(f"not in the device register: {', '.join(unknown[:5])}")
            done = [d for d, r in records.items() if r is not None and not r.active]
            if done:
                raise ValueError(f"already revoked: {', '.join(done[:5])}")
            return [{"op": "revoke", "device": d, "at": now, "why": reason} for d in ids]

        self.register.append(events)
        return ids


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
