"""Differential privacy: update clipping, Gaussian noise and an RDP accountant. No Ray."""

from redfl.privacy.accountant import RdpAccountant, sampled_gaussian_rdp
from redfl.privacy.clipping import DPAdaptiveClipping, DPFixedClipping

__all__ = ["DPAdaptiveClipping", "DPFixedClipping", "RdpAccountant", "sampled_gaussian_rdp"]
