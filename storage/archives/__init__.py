"""Image archives: docker-archive (as `docker save` writes it) and OCI layout tars, both ways."""
from .load import Loaded, load
from .save import save

__all__ = ["Loaded", "load", "save"]
