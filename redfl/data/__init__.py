"""Data loading and federated partitioning utilities."""

from redfl.data.digits import load_digits_arrays, train_test_split
from redfl.data.partition import (
    PARTITIONER_NAMES,
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    ShardPartitioner,
    partition_by_name,
)

__all__ = [
    "PARTITIONER_NAMES",
    "DirichletPartitioner",
    "IidPartitioner",
    "Partitioner",
    "ShardPartitioner",
    "load_digits_arrays",
    "partition_by_name",
    "train_test_split",
]
