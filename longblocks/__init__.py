"""longblocks: verifiable long-context tasks generated from fictional fact worlds."""

__version__ = "0.1.0"
