"""The cortex operator console, a Textual application over a ``Control``."""
