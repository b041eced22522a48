"""Replicated mode: several `edgectl run` replicas share one model through etcd (docs/cluster.md)."""
