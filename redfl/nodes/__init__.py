"""The classes users subclass: :class:`FederatedNode` and the star :class:`Client`."""

from redfl.nodes.client import Client
from redfl.nodes.node import FederatedNode, NodeContext, NodePort

__all__ = ["Client", "FederatedNode", "NodeContext", "NodePort"]
