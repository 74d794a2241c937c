"""cortex: LLM agent tasks against Kubernetes clusters through a Redis queue."""

__version__ = "0.1.0"
