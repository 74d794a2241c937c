"""The Kubernetes side of cortex: the API connection and the read-only tools."""
