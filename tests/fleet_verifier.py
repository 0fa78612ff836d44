"""An operator's enrolment verifiers for the fleet tests (imported by ``enroll_verifier``)."""

from __future__ import annotations

CALLS: list[tuple[str, str]] = []
"""Every (device id, credential) the verifiers were asked about, in order."""


def approve(device_id: str, credential: str) -> bool:
    """Approve a credential of the form ``attest:<device id>:<anything>``."""
    CALLS.append((device_id, credential))
    return credential.startswith(f"attest:{device_id}:")


async def approve_async(device_id: str, credential: str) -> bool:
    """:func:`approve`, as a coroutine function."""
    return approve(device_id, credential)


def broken(device_id: str, credential: str) -> bool:
    """A verifier with a bug."""
    raise RuntimeError("the attestation service is down")


NOT_A_FUNCTION = 42
