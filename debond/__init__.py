"""debond: nanoscale electrode images to a validated model of capacity fade."""

from importlib.metadata import version as _version

#: The installed distribution's version (declared once, in pyproject.toml).
__version__ = _version("debond")
