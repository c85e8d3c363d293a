"""Model compression for Keras 3 models before int8 deployment."""

from toolkit.compress.cluster import cluster, strip_clustering

__all__ = ["cluster", "strip_clustering"]
