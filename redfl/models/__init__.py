"""Small numpy models trained by federated clients."""

from redfl.models.softmax import SoftmaxRegression

__all__ = ["SoftmaxRegression"]
