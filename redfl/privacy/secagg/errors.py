"""The ways a secure aggregation round stops: it fails, a client refuses, a share is forged."""

from __future__ import annotations


class SecAggError(RuntimeError):
    """A secure aggregation round cannot go on."""


class RoundFailed(SecAggError):
    """Too many clients dropped (or too few remain) at ``stage`` for the round to finish.

    The round stops before anything more is asked of the clients; what the server holds
    then (masked inputs, fewer than threshold shares of any secret) reveals no input.

    Attributes
    ----------
    round:
        The round that failed.
    stage:
        The stage whose messages were too few (``"advertise_keys"``, ``"share_keys"``,
        ``"masked_input"`` or ``"unmasking"``).
    """

    def __init__(self, rnd: int, stage: str, reason: str) -> None:
        super().__init__(
            f"secure aggregation round {rnd} failed at stage {stage}: {reason}; "
            "nothing was revealed"
        )
        self.round = rnd
        self.stage = stage


class ClientRefusal(SecAggError):
    """An honest client will not answer the server: the request could reveal an input."""


class ShareAuthenticationError(SecAggError):
    """An encrypted share failed authentication: it was altered, or is not from the sender,
    for the recipient or of the round it claims."""
