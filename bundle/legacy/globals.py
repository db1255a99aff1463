"""Which pickle globals are tensor plumbing, and which may never be approved.

Approval is the guard: the restricted unpickler answers exactly the globals a
user approved from a scan. These two lists only sort a scan's findings:

* :func:`is_tensor_global` -- what a tensors-only file (a ``state_dict``, a dict of
  arrays) needs; modelled on ``torch._weights_only_unpickler``'s allow-list. A file
  that needs nothing else is "tensors-only" and can be loaded with
  ``torch.load`` with ``weights_only=True`` instead of being unpickled by us at all.
* :func:`danger` -- known ways to run code: process creation, ``eval``/``exec``,
  attribute and import gadgets, loaders that unpickle again, the remote-code
  gadgets that scanners have missed (``torch.utils.collect_env.run``,
  ``multiprocessing.util.spawnv_passfds``). The list can never be complete, which
  is why it only *adds* refusals: a global on it cannot be approved even by a user
  who asks, and makes the scan's verdict "dangerous".
"""

from __future__ import annotations

import re

__all__ = ["danger", "is_tensor_global"]

_TENSOR_EXACT = {
    "collections.OrderedDict",
    "collections.Counter",
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.slice",
    "_codecs.encode",
    "torch.Size",
    "torch.device",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch._tensor._rebuild_from_type_v2",
    "torch.serialization._get_layout",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.complex",
    "__builtin__.bytearray",
    "__builtin__.slice",
}
_TENSOR_PATTERNS = [
    re.compile(
        r"^torch\._utils\._rebuild_(tensor(_v[23])?|parameter(_with_state)?|qtensor|"
        r"device_tensor_from_cpu_tensor|device_tensor_from_numpy|"
        r"meta_tensor_no_storage)$"
    ),
    re.compile(r"^torch\.(cuda\.)?[A-Za-z0-9]+(Storage|Tensor)$"),
    re.compile(
        r"^torch\.(u?int\d+|float\d+(_\w+)?|bfloat16|bool|complex\d+|q?u?int\d+(x\d+)?|"
        r"bits\w+|per_(tensor|channel)_\w+)$"
    ),
    re.compile(r"^numpy\.dtypes\.\w+DType$"),
]


def is_tensor_global(target: str) -> bool:
    """Whether ``module.name`` only rebuilds tensors, arrays, dtypes and plain containers."""
    return target in _TENSOR_EXACT or any(p.match(target) for p in _TENSOR_PATTERNS)


# Modules whose every name is a way to run code, reach the network, or unpickle again.
_DANGEROUS_MODULES = (
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "sys",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "cPickle",
    "copyreg",
    "dill",
    "cloudpickle",
    "shelve",
    "marshal",
    "shutil",
    "socket",
    "_socket",
    "ssl",
    "http",
    "urllib",
    "urllib3",
    "requests",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
    "pty",
    "code",
    "codeop",
    "ctypes",
    "_ctypes",
    "multiprocessing",
    "concurrent",
    "threading",
    "_thread",
    "asyncio",
    "signal",
    "webbrowser",
    "platform",
    "pydoc",
    "timeit",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
    "trace",
    "distutils",
    "setuptools",
    "pip",
    "zipimport",
    "types",
    "inspect",
    "gc",
    "site",
    "sysconfig",
    "tempfile",
    "glob",
    "io",
    "_io",
    "codecs",
    "fileinput",
    "linecache",
    "torch.utils.collect_env",
    "torch.hub",
    "torch.jit",
    "torch._dynamo",
    "torch._inductor",
    "torch.serialization",
    "torch.package",
    "torch.multiprocessing",
    "torch.distributed",
    "torch.utils.cpp_extension",
    "torch.utils.data.datapipes",
    "torch._C",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.lib.npyio",
    "numpy.load",
    "joblib.parallel",
    "joblib.externals",
    "joblib._parallel_backends",
    "joblib.numpy_pickle_utils",
    "pandas.io",
    "keras.src.saving",
    "tensorflow",
    "uuid",
    "operator",
    "_operator",
)
_DANGEROUS_EXACT = {
    "torch.load",
    "torch.save",
    "numpy.load",
    "numpy.save",
    "joblib.load",
    "joblib.dump",
    "pandas.read_pickle",
    "functools.partial",
    "functools.reduce",
    "_operator.attrgetter",
    "_operator.methodcaller",
    "_operator.itemgetter",
}
# How protocol 0-2 pickles build plain objects: they call only the class they are given,
# which must itself be approved.
_SAFE_PLUMBING = {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"}
# builtins: these and nothing else are data; every other builtin reaches code or the world.
_SAFE_BUILTINS = {
    "set",
    "frozenset",
    "dict",
    "list",
    "tuple",
    "int",
    "float",
    "complex",
    "bytes",
    "bytearray",
    "slice",
    "range",
    "str",
    "bool",
    "object",
    "NotImplemented",
    "Ellipsis",
}


def danger(target: str) -> str | None:
    """Why ``module.name`` is a known way to run code (never approvable), else None."""
    if target in _SAFE_PLUMBING:
        return None
    module, _, name = target.rpartition(".")
    if "__" in name.strip("_") or (name.startswith("__") and name != "__main__"):
        return "reaches a dunder attribute (an attribute/import gadget)"
    if module in ("builtins", "__builtin__", "__builtins__"):
        if name in _SAFE_BUILTINS:
            return None
        return f"builtin {name}: code execution, I/O or attribute access"
    if target in _DANGEROUS_EXACT:
        return "loads or calls through another object (a known gadget)"
    for m in _DANGEROUS_MODULES:
        if module == m or module.startswith(m + "."):
            return f"module {m}: runs processes or code, reaches files or the network"
    return None
