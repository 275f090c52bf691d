"""esmdiv: audit whether a packed, padding-free ESM-2 forward changes anything that matters."""

__version__ = "0.1.0"
