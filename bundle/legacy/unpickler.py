"""A restricted unpickler: ``find_class`` is the whole allow-list.

Modelled on ``torch/_weights_only_unpickler.py``. The unpickler is the pure-Python
one (``pickle._Unpickler``) so that its opcode dispatch table can be cut down:
every opcode that is not expected in a model file -- extension codes, whose
meaning lives in the loading process's copyreg registry -- is refused by name
instead of being run. ``find_class`` imports a name only if the user approved
exactly ``module.name`` (as the file spells it, the form :mod:`bundle.legacy.scanner`
lists) and it is not a known way to run code. Everything a pickle can call
(REDUCE, NEWOBJ, INST, OBJ) is first fetched through ``find_class``, so an approved
class whose ``__reduce__`` names ``os.system`` is refused at ``os.system``: the
name an object *claims* does not matter, only the names the stream imports.

Used only inside the migration sandbox (:mod:`bundle.legacy.child`); never on a
bundle's load path.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Collection
from typing import IO, Any

from ..errors import ApprovalError
from .globals import danger

__all__ = ["REFUSED_OPCODES", "RestrictedUnpickler", "joblib_unpickler", "pickle_module"]

REFUSED_OPCODES = ("EXT1", "EXT2", "EXT4")
"""Opcodes refused outright: what they load is decided by the process, not the file."""


def _refuser(opname: str) -> Any:
    def refuse(self: Any) -> None:
        raise ApprovalError(
            f"the pickle uses opcode {opname}, which a model file has no need for; refused"
        )

    return refuse


def _restricted_dispatch(base: dict[int, Any]) -> dict[int, Any]:
    table = dict(base)
    for opname in REFUSED_OPCODES:
        table[getattr(pickle, opname)[0]] = _refuser(opname)
    return table


def _check(allowed: Collection[str], module: str, name: str) -> None:
    target = f"{module}.{name}"
    if target not in allowed:
        raise ApprovalError(f"the pickle imports {target}, which was not approved; refused")
    why = danger(target)
    if why:
        raise ApprovalError(f"the pickle imports {target} ({why}): never approvable")


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles only what ``allowed`` names (``module.name`` strings).

    Anything else -- a name not approved, a known code-execution name even if
    approved, a refused opcode, a persistent id without a loader's
    ``persistent_load`` -- raises :class:`bundle.ApprovalError` before it is used.
    """

    dispatch = _restricted_dispatch(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], *, allowed: Collection[str], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed = frozenset(allowed)

    def find_class(self, module: str, name: str) -> Any:
        """Import ``module.name`` only when approved (and not a known gadget)."""
        _check(self.allowed, module, name)
        return super().find_class(module, name)


def pickle_module(allowed: Collection[str]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load(..., weights_only=False)`` that unpickles with
    :class:`RestrictedUnpickler` and the given allow-list."""
    frozen = frozenset(allowed)

    class Unpickler(RestrictedUnpickler):
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            super().__init__(file, allowed=frozen, **kwargs)

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType("bundle_restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def joblib_unpickler(file: IO[bytes], allowed: Collection[str]) -> Any:
    """A joblib ``NumpyUnpickler`` (array data read between opcodes) restricted the same way.

    joblib reads an object array's nested pickle with a fresh unpickler whose
    ``find_class`` is this one's, so the allow-list holds there too.
    """
    from joblib.numpy_pickle import NumpyUnpickler

    frozen = frozenset(allowed)

    class RestrictedNumpyUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = _restricted_dispatch(NumpyUnpickler.dispatch)

        def find_class(self, module: str, name: str) -> Any:
            _check(frozen, module, name)
            return super().find_class(module, name)

    return RestrictedNumpyUnpickler("", file, ensure_native_byte_order=True)
