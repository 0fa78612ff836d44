"""Where nodes run: workers, placement, topology manager; ``local`` and ``ray`` runtimes.

Only this package imports Ray: its backend, its connection and the served models on Ray
Serve (:mod:`redfl.runtime.serving`).
"""

from redfl.runtime.remote import remote
from redfl.runtime.resources import ResourceError
from redfl.runtime.topology_manager import NotNeighbourError, TopologyManager
from redfl.runtime.virtual import VirtualNode

__all__ = ["NotNeighbourError", "ResourceError", "TopologyManager", "VirtualNode", "remote"]
