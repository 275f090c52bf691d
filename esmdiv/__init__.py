"""esmdiv: audit whether a packed, padding-free ESM-2 forward changes anything that matters."""

import time as _time

__version__ = "0.1.0"

#: When esmdiv was imported: where an audit's wall time (``timings.wall_s``) starts.
IMPORTED_AT = _time.perf_counter()
