"""The operator's side of a standing edge deployment: submit, list and abort jobs, read any
service's figures, with the operator's credential.

Every call presents the operator bundle (its certificate on the TLS connection, and a
short-lived operator token, :func:`redfl.trust.operator.operator_token`). ``redfl edge jobs``
and ``redfl edge stats`` are thin shells over :class:`Operator`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from redfl.edge.jobs import JobSpec, read_job_file
from redfl.edge.protocol import encode_arrays
from redfl.edge.provision import Member
from redfl.trust.operator import OPERATOR_HEADER, operator_token

__all__ = ["ControlError", "Operator"]


class ControlError(RuntimeError):
    """A request of the operator failed; the message is one line (the service's reason)."""


class Operator:
    """Requests to edge services as an operator.

    Parameters
    ----------
    member : Member
        The operator's credential (an operator bundle of the tree).
    timeout : float, default 30.0
        Seconds a request may take.
    """

    def __init__(self, member: Member, timeout: float = 30.0) -> None:
        if member.bundle.identity.kind != "operator":
            raise ValueError(f"{member.name!r} is not an operator's credential")
        self.member = member
        self.timeout = timeout
        self._tls = member.client_tls()

    @classmethod
    def of_tree(cls, tree_dir: Path) -> Operator:
        """The operator of a provisioning folder.

        Raises
        ------
        ValueError
            If its operator credential is missing or unusable (naming the file).
        """
        return cls(Member.load(tree_dir, "operator"))

    def headers(self) -> dict[str, str]:
        """An operator token, for a service without TLS client certificates."""
        return {OPERATOR_HEADER: operator_token(self.member.bundle)}

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """One request; its JSON reply.

        Raises
        ------
        ControlError
            The service cannot be reached, or answered with an error (its reason).
        """
        try:
            reply = httpx.request(
                method,
                url,
                headers=self.headers(),
                verify=self._tls,
                timeout=self.timeout,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise ControlError(f"{url}: {exc}") from None
        if reply.status_code >= 400:
            try:
                body = reply.json()
                reason = body.get("reason") or body.get("detail") or reply.text
            except ValueError:
                reason = reply.text
            raise ControlError(f"{url}: {reply.status_code} {str(reason)[:500]}")
        return reply.json()

    def get(self, url: str, **params: object) -> dict[str, Any]:
        """``GET url`` (with ``params`` as its query); the JSON reply."""
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        data: dict[str, Any] = self.request("GET", url, params=query)
        return data

    def submit_spec(
        self, server: str, spec: JobSpec, model: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Submit a job (and its initial model) to the server at ``server``; its summary."""
        body: dict[str, Any] = {"job": spec.model_dump(mode="json", exclude_none=True)}
        if model is not None:
            body["model"] = encode_arrays(model)
        data: dict[str, Any] = self.request("POST", f"{server}/jobs", json=body)
        return data

    def submit(self, server: str, job_file: Path) -> dict[str, Any]:
        """Submit a job file (its ``initial_parameters`` file read here and sent).

        Raises
        ------
        ConfigError
            For a job file that cannot be read (naming the field).
        ControlError
            For the server's refusal (its reason).
        """
        spec, model = read_job_file(job_file)
        return self.submit_spec(server, spec, model)

    def jobs(self, server: str) -> list[dict[str, Any]]:
        """Every job of the server, the oldest first."""
        jobs: list[dict[str, Any]] = self.get(f"{server}/jobs")["jobs"]
        return jobs

    def abort(self, server: str, job_id: str, reason: str = "") -> dict[str, Any]:
        """Abort a running job; its summary."""
        body = {"job_id": job_id, "reason": reason}
        data: dict[str, Any] = self.request("POST", f"{server}/jobs/abort", json=body)
        return data
