"""Replicated mode: the controller's model shared through etcd."""
