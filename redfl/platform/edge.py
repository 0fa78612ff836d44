"""The platform as an operator of edge deployments: their servers' job routes over HTTPS.

The platform does not import the edge's code: it speaks to an edge server as any operator
does, over mutually authenticated TLS with the operator bundle its settings name (the
certificate on the connection, checked against the tree's CA by the server; the server's
certificate checked against the same CA and host name by the platform) and a short-lived
operator token on each request (:func:`redfl.trust.operator.operator_token`). The routes are
the edge server's ``POST /jobs``, ``POST /jobs/abort``, ``GET /jobs`` and ``GET /jobs/{id}``.

Every request has a deadline (``edge_timeout_seconds``). What goes wrong becomes an
:class:`EdgeError` with the status the platform answers and one line saying why:

- the server cannot be reached or does not answer in time: 503;
- the TLS handshake fails, or the server refuses the platform's credential (revoked,
  expired, of another tree): 502, with the server's reason;
- the server refuses the job (a bad field): 422, naming the field as the server does; no
  such job: 404; a job of that name is running: 409;
- any other error of the server: 502 with its status and reason.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from redfl.platform.settings import EdgeDeploymentSetting
from redfl.trust import client_context
from redfl.trust.operator import OPERATOR_HEADER, operator_token

__all__ = ["EdgeDeployment", "EdgeError"]

_PASSED_ON = {404: 404, 409: 409, 413: 413}
"""The edge server's statuses the platform answers as they are."""


class EdgeError(Exception):
    """A request to an edge server failed.

    Parameters
    ----------
    status : int
        The HTTP status the platform answers with.
    detail : str
        One line: what went wrong.
    field : str | None
        For a refused job, the field the server named.
    """

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


def _reason(reply: httpx.Response) -> str:
    """The one-line reason of an edge server's error reply (``reason``, else ``detail``)."""
    try:
        body: Any = reply.json()
    except ValueError:
        return reply.text.strip()[:300] or reply.reason_phrase
    if isinstance(body, dict):
        reason = body.get("reason") or body.get("detail")
        if reason:
            return str(reason).splitlines()[0][:500]
    return reply.reason_phrase


def _line(error: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error at the root of a connection error, if it was one."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class EdgeDeployment:
    """One edge deployment's server, as the platform's settings name it.

    Parameters
    ----------
    name : str
        The deployment's name in the settings.
    setting : EdgeDeploymentSetting
        Its server's URL and the operator credential.
    timeout : float
        Seconds a request may take, connecting included.

    Raises
    ------
    OSError, BundleError
        If the credential cannot be read (any more).
    """

    def __init__(self, name: str, setting: EdgeDeploymentSetting, timeout: float) -> None:
        self.name = name
        self.url = setting.url
        self.timeout = timeout
        self._bundle = setting.bundle()
        self._client = httpx.Client(
            base_url=self.url, verify=client_context(self._bundle), timeout=timeout
        )

    def close(self) -> None:
        """Close the connections to the server."""
        self._client.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request to the edge server; its JSON reply.

        Raises
        ------
        EdgeError
            As the module docstring says.
        """
        where = f"edge deployment {self.name!r} ({self.url})"
        headers = {OPERATOR_HEADER: operator_token(self._bundle)}
        try:
            reply = self._client.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise EdgeError(503, f"{where} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            tls = _tls_failure(error)
            if tls is not None:
                raise EdgeError(502, f"{where}: the TLS handshake failed: {_line(tls)}") from None
            raise EdgeError(503, f"{where} is unreachable: {_line(error)}") from None
        if reply.status_code < 400:
            try:
                return reply.json()
            except ValueError:
                raise EdgeError(502, f"{where} answered {reply.status_code} without JSON") from None
        reason = _reason(reply)
        status = reply.status_code
        if status in (401, 403):
            raise EdgeError(502, f"{where} refused the platform's credential: {reason}")
        if status in (400, 422):
            field = reason.split(":", 1)[0] if ":" in reason else None
            raise EdgeError(422, reason, field)
        if status in _PASSED_ON:
            raise EdgeError(_PASSED_ON[status], reason)
        raise EdgeError(502, f"{where} answered {status}: {reason}")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of the server, the oldest first (their summaries)."""
        jobs: list[dict[str, Any]] = self.request("GET", "/jobs")["jobs"]
        return jobs

    def job(self, job_id: str) -> dict[str, Any]:
        """One job: its summary and the history of its versions (their metrics)."""
        data: dict[str, Any] = self.request("GET", f"/jobs/{job_id}")
        return data

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a job (its fields, as in a job file); its summary."""
        data: dict[str, Any] = self.request("POST", "/jobs", {"job": spec})
        return data

    def abort(self, job_id: str, reason: str) -> dict[str, Any]:
        """Abort a running job; its summary."""
        data: dict[str, Any] = self.request(
            "POST", "/jobs/abort", {"job_id": job_id, "reason": reason}
        )
        return data
