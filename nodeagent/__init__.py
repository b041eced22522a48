"""The node agent (`edgectl agent`): attests a compute node with a one-time join token, follows the
workloads placed on it, and runs each one's process and Envoy sidecar."""
