"""The model store: immutable versions and signed, append-only aliases, with no server.

Owns everything about keeping bundles somewhere shared -- a folder or an
S3-compatible bucket, through fsspec -- and getting them back verified::

    push      bundle --verify--> blobs/sha256/<digest>  +  versions/<name>/<version>.json
    promote   sign record seq n+1 --exclusive create--> aliases/<name>/<alias>/<seq>.json
    resolve   records --verify (signatures, chain, expiry, client state)--> digest
    load      blob --ranged reads, hashed as they arrive--> cache --bundle.load--> Model

``store.py`` is the :class:`Store`; ``log.py`` the alias records and their I/O-free
verification; ``backends.py`` exclusive create per backend; ``cache.py`` the
digest-keyed local cache; ``state.py`` the client state file; ``remote.py`` loading
a bundle from a URL. spec/STORE.md is the normative description.
"""

from .log import AliasRecord, Target
from .store import GcReport, Resolved, Store, StoredVersion

__all__ = ["AliasRecord", "GcReport", "Resolved", "Store", "StoredVersion", "Target"]
