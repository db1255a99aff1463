"""A static pickle-opcode walker: every import and call target, with zero execution.

:func:`walk` reads one pickle stream with :func:`pickletools.genops` (which parses
opcodes and their arguments and never resolves or calls anything) and replays it
on a *symbolic* stack and memo: strings, numbers, tuples, lists and dicts are kept
as values, everything a real unpickler would import or build is kept as a
description (:class:`Global`, :class:`Call`). That is what resolves a
``STACK_GLOBAL`` whose module and name strings were pushed long before, memoized,
popped and fetched back with ``BINGET`` -- the trick that hides ``os.system``
from scanners that only look at the opcodes next to ``STACK_GLOBAL``.

What cannot be resolved statically is reported, never guessed: a ``STACK_GLOBAL``
whose operands are not strings, an ``EXT1/2/4`` code (its meaning is the loading
process's copyreg registry), a ``BUILD`` that would set attributes on an imported
object. A file with any of these is "unscannable", which migration treats as a
refusal.

joblib files interleave raw array bytes with the pickle opcodes: after the
``BUILD`` of a ``joblib.numpy_pickle.NumpyArrayWrapper`` its reader takes the
array's bytes (or, for object arrays, a nested pickle) straight from the stream.
:func:`walk` does the same arithmetic from the wrapper's symbolic state (shape,
dtype, alignment) to skip the bytes or walk the nested pickle.
"""

from __future__ import annotations

import contextlib
import io
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["Call", "Global", "PickleFacts", "UnscannableError", "walk", "walk_bytes"]

MAX_NESTING = 16
"""Nested pickles (object arrays inside joblib files) deeper than this are refused."""

MAX_SHORT_BYTES = 256
"""Byte strings longer than this are not kept on the symbolic stack: never needed to
resolve a name, and a checkpoint's tensors would otherwise be held twice."""


class UnscannableError(Exception):
    """The stream cannot be walked to its end (malformed, truncated, too deep)."""


@dataclass(frozen=True)
class Global:
    """An object a real unpickler would import: ``module.name``."""

    module: str
    name: str

    @property
    def target(self) -> str:
        """``module.name``, the form the scan reports and approvals name."""
        return f"{self.module}.{self.name}"


@dataclass
class Call:
    """What calling (REDUCE, NEWOBJ, INST, OBJ) ``func`` with ``args`` would return."""

    func: Any
    args: Any
    state: Any = None


@dataclass
class _Opaque:
    what: str


@dataclass
class _SList:
    items: list[Any] = field(default_factory=list)


@dataclass
class _SDict:
    items: dict[Any, Any] = field(default_factory=dict)


_MARK = object()


@dataclass
class PickleFacts:
    """What one pickle stream (and the pickles nested in it) would import and call."""

    imports: dict[str, Global] = field(default_factory=dict)
    """``module.name`` -> the global, for every GLOBAL/STACK_GLOBAL/INST."""
    calls: set[str] = field(default_factory=set)
    """Targets that would be called: REDUCE, NEWOBJ(_EX), INST, OBJ on an import."""
    indirect_calls: set[str] = field(default_factory=set)
    """Calls of something that is not an import (the result of another call)."""
    problems: list[str] = field(default_factory=list)
    """What cannot be resolved statically; any makes the stream unscannable."""
    persistent_ids: int = 0
    """Persistent references (torch storages): resolved by the loader, not the pickle."""
    opcodes: set[str] = field(default_factory=set)
    protocol: int = 0
    raw_bytes: int = 0
    """Bytes of array data that joblib reads between opcodes (skipped, not parsed)."""
    nested: int = 0

    def merge(self, other: PickleFacts) -> None:
        """Add another stream's facts to these."""
        for k, g in other.imports.items():
            self.imports.setdefault(k, g)
        self.calls |= other.calls
        self.indirect_calls |= other.indirect_calls
        self.problems += other.problems
        self.persistent_ids += other.persistent_ids
        self.opcodes |= other.opcodes
        self.protocol = max(self.protocol, other.protocol)
        self.raw_bytes += other.raw_bytes
        self.nested += other.nested


def _describe(v: Any) -> str:
    if isinstance(v, Global):
        return v.target
    if isinstance(v, Call):
        return f"the result of {_describe(v.func)}(...)"
    return type(v).__name__ if not isinstance(v, _Opaque) else v.what


_DTYPE = re.compile(r"^[<>|=]?([biufcmMOUSV])(\d*)$")
_JOBLIB_WRAPPERS = {"joblib.numpy_pickle.NumpyArrayWrapper"}


def _joblib_array(obj: Any) -> tuple[bool, int, int | None] | None:
    """(object dtype?, data bytes, alignment) for a NumpyArrayWrapper being built."""
    if not (
        isinstance(obj, Call)
        and isinstance(obj.func, Global)
        and obj.func.target in _JOBLIB_WRAPPERS
        and isinstance(obj.state, _SDict)
    ):
        return None
    state = obj.state.items
    shape, dtype = state.get("shape"), state.get("dtype")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise UnscannableError("a joblib array wrapper whose shape is not a tuple of sizes")
    if not (
        isinstance(dtype, Call)
        and isinstance(dtype.func, Global)
        and dtype.func.target == "numpy.dtype"
        and isinstance(dtype.args, tuple)
        and dtype.args
        and isinstance(dtype.args[0], str)
    ):
        raise UnscannableError("a joblib array wrapper whose dtype is not numpy.dtype('<code>')")
    m = _DTYPE.match(dtype.args[0])
    if m is None:
        raise UnscannableError(f"a joblib array of dtype {dtype.args[0]!r} (not a plain dtype)")
    kind, digits = m.groups()
    dstate = dtype.state if isinstance(dtype.state, tuple) else ()
    has_object = kind == "O" or _structured_has_object(dstate, 0)
    count = 1
    for n in shape:
        count *= n
    alignment = state.get("numpy_array_alignment_bytes")
    if alignment is not None and not isinstance(alignment, int):
        raise UnscannableError("a joblib array wrapper with a non-integer alignment")
    if has_object:
        return True, 0, alignment
    if kind in "USV" and len(dstate) >= 6 and isinstance(dstate[5], int) and dstate[5] > 0:
        itemsize = dstate[5]
    elif digits:
        itemsize = int(digits)
    else:
        raise UnscannableError(f"a joblib array of dtype {dtype.args[0]!r} with no item size")
    return False, count * itemsize, alignment


def _structured_has_object(dstate: tuple[Any, ...], depth: int) -> bool:
    """Whether a structured dtype's fields (its pickled state) hold Python objects."""
    if len(dstate) < 5 or dstate[3] is None:
        return False
    fields = dstate[4]
    if depth > 8 or not isinstance(fields, _SDict):
        raise UnscannableError("a joblib array of a structured dtype this walker cannot read")
    for spec in fields.items.values():
        sub = spec[0] if isinstance(spec, tuple) and spec else None
        if not (
            isinstance(sub, Call)
            and isinstance(sub.func, Global)
            and sub.func.target == "numpy.dtype"
            and isinstance(sub.args, tuple)
            and sub.args
            and isinstance(sub.args[0], str)
        ):
            raise UnscannableError("a structured dtype field that is not numpy.dtype('<code>')")
        m = _DTYPE.match(sub.args[0])
        if m is None:
            raise UnscannableError(f"a structured dtype field of dtype {sub.args[0]!r}")
        sstate = sub.state if isinstance(sub.state, tuple) else ()
        if m.group(1) == "O" or _structured_has_object(sstate, depth + 1):
            return True
    return False


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise UnscannableError("a MARK-consuming opcode with no MARK on the stack")


_PRIMITIVE_OPS = {
    "INT",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG",
    "LONG1",
    "LONG4",
    "FLOAT",
    "BINFLOAT",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
}
_CONSTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def walk(
    stream: IO[bytes],
    facts: PickleFacts | None = None,
    *,
    depth: int = 0,
    on_op: Callable[[str], None] | None = None,
) -> PickleFacts:
    """Walk one pickle from the stream's position to its STOP; nothing is executed.

    ``facts`` accumulates across calls (several pickles in one file). Raises
    :class:`UnscannableError` for a stream that cannot be walked to its end.
    """
    facts = facts if facts is not None else PickleFacts()
    if depth > MAX_NESTING:
        raise UnscannableError(f"pickles nested more than {MAX_NESTING} deep")
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop() -> Any:
        if not stack or stack[-1] is _MARK:
            raise UnscannableError("an opcode pops from an empty stack")
        return stack.pop()

    def top() -> Any:
        if not stack or stack[-1] is _MARK:
            raise UnscannableError("an opcode reads from an empty stack")
        return stack[-1]

    def imported(module: Any, name: Any) -> Global:
        g = Global(str(module), str(name))
        facts.imports.setdefault(g.target, g)
        return g

    def called(func: Any, args: Any) -> Call:
        if isinstance(func, Global):
            facts.calls.add(func.target)
        else:
            facts.indirect_calls.add(_describe(func))
        return Call(func, args)

    try:
        ops = pickletools.genops(stream)
        for op, arg, _pos in ops:
            name = op.name
            facts.opcodes.add(name)
            if on_op is not None:
                on_op(name)
            if name == "PROTO":
                facts.protocol = max(facts.protocol, int(arg or 0))
            elif name in ("FRAME", "READONLY_BUFFER"):
                pass
            elif name == "STOP":
                pop()
                return facts
            elif name in _PRIMITIVE_OPS:
                if isinstance(arg, (bytes, bytearray)) and len(arg) > MAX_SHORT_BYTES:
                    stack.append(_Opaque("bytes"))
                else:
                    stack.append(arg)
            elif name in _CONSTS:
                stack.append(_CONSTS[name])
            elif name == "NEXT_BUFFER":
                stack.append(_Opaque("out-of-band buffer"))
            elif name == "EMPTY_LIST":
                stack.append(_SList())
            elif name in ("EMPTY_DICT",):
                stack.append(_SDict())
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_SET":
                stack.append(_SList())
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "LIST":
                stack.append(_SList(_pop_mark(stack)))
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = [pop() for _ in range(n)][::-1]
                stack.append(tuple(items))
            elif name == "DICT":
                items = _pop_mark(stack)
                d = _SDict()
                for k, v in zip(items[::2], items[1::2], strict=False):
                    _setitem(d, k, v)
                stack.append(d)
            elif name == "FROZENSET":
                stack.append(_SList(_pop_mark(stack)))
            elif name == "APPEND":
                v = pop()
                if isinstance(top(), _SList):
                    top().items.append(v)
            elif name == "APPENDS" or name == "ADDITEMS":
                items = _pop_mark(stack)
                if isinstance(top(), _SList):
                    top().items.extend(items)
            elif name == "SETITEM":
                v = pop()
                k = pop()
                if isinstance(top(), _SDict):
                    _setitem(top(), k, v)
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                if isinstance(top(), _SDict):
                    for k, v in zip(items[::2], items[1::2], strict=False):
                        _setitem(top(), k, v)
            elif name == "POP":
                if stack and stack[-1] is _MARK:
                    stack.pop()  # pickletools documents POP of a MARK as allowed
                else:
                    pop()
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = top()
            elif name == "MEMOIZE":
                memo[len(memo)] = top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg or 0) not in memo:
                    raise UnscannableError(f"{name} {arg} reads a memo slot never written")
                stack.append(memo[int(arg or 0)])
            elif name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                stack.append(imported(module, gname))
            elif name == "STACK_GLOBAL":
                gname = pop()
                module = pop()
                if not (isinstance(module, str) and isinstance(gname, str)):
                    facts.problems.append(
                        f"STACK_GLOBAL of {_describe(module)} / {_describe(gname)}: the "
                        "module or name is not a string the file spells out"
                    )
                    stack.append(_Opaque("unresolved global"))
                else:
                    stack.append(imported(module, gname))
            elif name == "INST":
                module, _, gname = str(arg).partition(" ")
                args = tuple(_pop_mark(stack))
                stack.append(called(imported(module, gname), args))
            elif name == "OBJ":
                items = _pop_mark(stack)
                if not items:
                    raise UnscannableError("OBJ with no class")
                stack.append(called(items[0], tuple(items[1:])))
            elif name == "REDUCE":
                args = pop()
                func = pop()
                stack.append(called(func, args))
            elif name == "NEWOBJ":
                args = pop()
                cls = pop()
                stack.append(called(cls, args))
            elif name == "NEWOBJ_EX":
                pop()
                args = pop()
                cls = pop()
                stack.append(called(cls, args))
            elif name == "BUILD":
                state = pop()
                obj = top()
                if isinstance(obj, Global):
                    facts.problems.append(
                        f"BUILD on the imported object {obj.target}: would set its attributes"
                    )
                elif isinstance(obj, Call):
                    obj.state = state
                    wrapper = _joblib_array(obj)
                    if wrapper is not None:
                        stack[-1] = _Opaque("ndarray")
                        _skip_joblib_array(stream, facts, wrapper, depth)
            elif name in ("PERSID", "BINPERSID"):
                if name == "BINPERSID":
                    pop()
                facts.persistent_ids += 1
                stack.append(_Opaque("persistent object"))
            elif name in ("EXT1", "EXT2", "EXT4"):
                facts.problems.append(
                    f"{name} {arg}: an extension code whose meaning is the loading process's "
                    "copyreg registry, not the file"
                )
                stack.append(_Opaque("extension object"))
            else:
                facts.problems.append(f"opcode {name} is not one this walker models")
                raise UnscannableError(f"opcode {name} is not one this walker models")
    except UnscannableError:
        raise
    except (ValueError, EOFError, IndexError, TypeError, KeyError, RecursionError) as e:
        raise UnscannableError(f"not a well-formed pickle: {e}") from e
    raise UnscannableError("the pickle ends without a STOP opcode")


def _setitem(d: _SDict, k: Any, v: Any) -> None:
    with contextlib.suppress(TypeError):  # an unhashable symbolic key: nothing to keep
        d.items[k] = v


def _skip_joblib_array(
    stream: IO[bytes], facts: PickleFacts, wrapper: tuple[bool, int, int | None], depth: int
) -> None:
    has_object, nbytes, alignment = wrapper
    if has_object:
        facts.nested += 1
        walk(stream, facts, depth=depth + 1)
        return
    if alignment is not None:
        pad = stream.read(1)
        if len(pad) != 1:
            raise UnscannableError("a joblib array's padding byte is missing")
        nbytes += pad[0]
    here = stream.tell()
    stream.seek(0, io.SEEK_END)
    end = stream.tell()
    if here + nbytes > end:
        raise UnscannableError("a joblib array's data runs past the end of the file")
    stream.seek(here + nbytes)
    facts.raw_bytes += nbytes


def walk_bytes(data: bytes | memoryview, *, many: bool = False) -> tuple[PickleFacts, int]:
    """Walk the pickle at the start of ``data`` (``many``: each one that follows, too).

    Returns the facts and the offset where the walked pickles end (trailing bytes are
    the caller's to judge: legacy torch files put raw storages there).
    """
    stream = io.BytesIO(data)
    facts = PickleFacts()
    walk(stream, facts)
    while many and stream.tell() < len(data):
        here = stream.tell()
        more = PickleFacts()
        try:
            walk(stream, more)
        except UnscannableError:
            stream.seek(here)  # not a pickle: the caller judges what the bytes are
            break
        facts.merge(more)
    return facts, stream.tell()
