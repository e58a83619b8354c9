"""What everyone shares: the slice spec, units, locations, the wire protocol, client and CLI."""

__version__ = "0.1.0"
