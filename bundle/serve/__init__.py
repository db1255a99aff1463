"""The inference server: nothing goes live unless it verified under the trust policy.

    source (file / store alias) --changed--> verify + session --> preflight --> smoke
        --> atomic swap (old version finishes its requests) --> probation --> keep | roll back

:func:`create_app` returns an ASGI app speaking the Open Inference Protocol v2
(KServe, Triton and MLServer clients work unchanged) plus ``/predict`` on records
or columns, ``/metrics`` and a web page; ``model-bundle serve`` runs it with
uvicorn. Needs the ``serve`` extra (starlette, uvicorn, prometheus-client).

    >>> import bundle
    >>> from bundle.serve import create_app
    >>> app = create_app("iris.mbundle", trust=bundle.TrustPolicy(keys="me.pub"))
"""

from .app import create_app, serve
from .probation import ProbationPolicy
from .registry import Registry, ServeOptions, Version
from .sources import Candidate, FileSource, Source, StoreSource
from .threads import available_cpus, session_options

__all__ = [
    "Candidate",
    "FileSource",
    "ProbationPolicy",
    "Registry",
    "ServeOptions",
    "Source",
    "StoreSource",
    "Version",
    "available_cpus",
    "create_app",
    "serve",
    "session_options",
]
