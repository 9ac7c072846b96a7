"""The web UI served at `/ui` (see `routes`)."""

from noetl.api.ui.routes import install

__all__ = ["install"]
