"""Attack simulation: malicious-client wrappers and colluding attacks. No Ray."""

from redfl.attacks.alie import LittleIsEnough, alie_z
from redfl.attacks.clients import (
    Attack,
    Attacked,
    GaussianNoise,
    LabelFlip,
    MaliciousClient,
    SignFlip,
    choose_attackers,
)

__all__ = [
    "Attack",
    "Attacked",
    "GaussianNoise",
    "LabelFlip",
    "LittleIsEnough",
    "MaliciousClient",
    "SignFlip",
    "alie_z",
    "choose_attackers",
]
