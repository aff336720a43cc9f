"""Which database errors mean "the database is away" rather than "this data is wrong".

A transient error (connection refused or lost, admin shutdown, timeout, serialization failure or
deadlock) must never get a message dead-lettered or a caller an INTERNAL: the work is kept and tried
again when the database is back. Anything else the database refuses it will refuse again.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import exc as sa_exc

# SQLSTATE classes and codes that pass: 08 connection exception, 53 insufficient resources, 57P0x
# operator intervention (admin shutdown, crash shutdown, cannot connect now), 40001 serialization
# failure, 40P01 deadlock, 55P03 lock not available, 57014 query cancelled (statement timeout).
_TRANSIENT_CLASSES: Final = ("08", "53")
_TRANSIENT_CODES: Final = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        code = getattr(error.orig, "pgcode", None) or ""
        return code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES
    # The pool could not hand out a connection in time, or a connection could not be made at all.
    return isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError)
