"""Worker backends: who starts, stops and scales the worker processes."""
