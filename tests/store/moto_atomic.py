"""Run ``moto.server`` with conditional PutObject made atomic (see the s3_endpoint fixture).

moto checks a PutObject's ``If-None-Match: *`` and then stores the object in two
steps without a lock, so two of its request threads can both pass the check. Real
S3 makes the check and the write one atomic step, and that is the contract the
store's alias log relies on. Holding one lock around moto's PutObject handler gives
moto the same semantics; everything else is moto's server as ``python -m
moto.server`` runs it. Arguments are moto.server's own (-H host -p port).
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

from moto import server
from moto.s3.responses import S3Response

_LOCK = threading.Lock()
_put_object = S3Response.put_object


@functools.wraps(_put_object)
def _atomic_put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
    with _LOCK:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]

if __name__ == "__main__":
    server.main(sys.argv[1:])
