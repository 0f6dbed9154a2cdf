"""The demo web app (standard library only): `argen web PIPELINE_DIR`."""
from .app import make_server, parse_query

__all__ = ["make_server", "parse_query"]
