"""NoETL in Python: a declarative, event-sourced workflow engine."""

__version__ = "0.1.0"
