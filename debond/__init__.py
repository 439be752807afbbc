"""debond: nanoscale electrode images to a validated model of capacity fade."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

#: The installed distribution's version (declared once, in pyproject.toml);
#: a source tree on the path that was never installed has none.
try:
    __version__ = _version("debond")
except PackageNotFoundError:  # pragma: no cover - only outside an install
    __version__ = "0+unknown"
