"""The register: every credential a trust home issued, and which ones are revoked.

It is one JSON file, the authority on revocation: a verifier with access to it refuses a
revoked certificate from the moment the file is replaced, and refuses a certificate whose
serial the register does not hold at all (signed by the CA yet never recorded: the register
was lost or the CA key used elsewhere). The file is public (mode 0644): it holds names, kinds,
serials and dates, no secret. Its shape::

    {"format": "redfl-trust-register", "version": 1, "credentials": [
        {"name": "site-a", "kind": "site", "serial": "5f0c...",
         "not_before": "2025-01-01T00:00:00+00:00", "not_after": "2026-01-01T00:00:00+00:00",
         "revoked": null | {"when": "2025-03-01T12:00:00+00:00", "why": "laptop lost"}}]}

Serials are hexadecimal strings (they have up to 159 bits, more than many JSON readers keep).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redfl.trust.files import PUBLIC, write_atomic
from redfl.trust.identity import Kind, check_name, parse_kind

__all__ = ["Record", "Register", "RegisterError", "Revocation"]

FORMAT = "redfl-trust-register"
VERSION = 1


class RegisterError(ValueError):
    """The register file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Revocation:
    """When and why a credential was revoked.

    Attributes
    ----------
    when
        The time of the revocation (UTC).
    why
        The reason given, in words.
    """

    when: datetime
    why: str


@dataclass(frozen=True)
class Record:
    """One issued credential.

    Attributes
    ----------
    name, kind
        The member's identity.
    serial
        The certificate's serial number.
    not_before, not_after
        The certificate's validity period (UTC).
    revoked
        The revocation, or None while it is not revoked.
    """

    name: str
    kind: Kind
    serial: int
    not_before: datetime
    not_after: datetime
    revoked: Revocation | None = None

    def valid_at(self, when: datetime) -> bool:
        """Whether the credential is unrevoked and inside its validity period at ``when``."""
        return self.revoked is None and self.not_before <= when <= self.not_after


@dataclass(frozen=True)
class Register:
    """Every issued credential, in issue order.

    Attributes
    ----------
    records
        The credentials; serials are unique.
    """

    records: tuple[Record, ...] = ()

    def by_serial(self, serial: int) -> Record | None:
        """The record of the certificate with this serial, or None."""
        for record in self.records:
            if record.serial == serial:
                return record
        return None

    def named(self, name: str) -> list[Record]:
        """Every record of this name, oldest first."""
        return [record for record in self.records if record.name == name]

    def adding(self, record: Record) -> Register:
        """This register with ``record`` appended."""
        return Register((*self.records, record))

    def revoking(self, serials: set[int], revocation: Revocation) -> Register:
        """This register with the given serials marked revoked."""
        return Register(
            tuple(
                replace(r, revoked=revocation) if r.serial in serials else r for r in self.records
            )
        )

    @classmethod
    def load(cls, path: Path) -> Register:
        """Read a register file.

        Raises
        ------
        RegisterError
            If the file is missing, not JSON, or not a register; the message names it.
        """
        try:
            raw = json.loads(Path(path).read_bytes())
        except FileNotFoundError:
            raise RegisterError(f"register {path} not found") from None
        except (OSError, ValueError) as exc:
            raise RegisterError(f"register {path} is not readable JSON: {exc}") from None
        try:
            if raw.get("format") != FORMAT or raw.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} file of version {VERSION}")
            return cls(tuple(_record(entry) for entry in raw["credentials"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise RegisterError(f"register {path} is malformed: {exc!r}") from None

    def save(self, path: Path) -> None:
        """Write the register to ``path`` atomically (mode 0644)."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "credentials": [_entry(record) for record in self.records],
        }
        write_atomic(Path(path), (json.dumps(data, indent=2) + "\n").encode(), PUBLIC)


def _entry(record: Record) -> dict[str, Any]:
    revoked = record.revoked
    return {
        "name": record.name,
        "kind": record.kind,
        "serial": f"{record.serial:x}",
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "revoked": None
        if revoked is None
        else {"when": revoked.when.isoformat(), "why": revoked.why},
    }


def _record(entry: dict[str, Any]) -> Record:
    revoked = entry["revoked"]
    return Record(
        name=check_name(entry["name"]),
        kind=parse_kind(entry["kind"]),
        serial=int(entry["serial"], 16),
        not_before=_utc(entry["not_before"]),
        not_after=_utc(entry["not_after"]),
        revoked=None if revoked is None else Revocation(_utc(revoked["when"]), str(revoked["why"])),
    )


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return when.astimezone(UTC)
