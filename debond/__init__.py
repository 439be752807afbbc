"""debond: nanoscale electrode images to a validated model of capacity fade."""

__version__ = "0.1.0"
