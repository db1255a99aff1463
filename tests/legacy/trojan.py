"""A class a user might approve: it claims to be a model, but pickles as os.system."""

from __future__ import annotations

import contextlib
import os
from typing import Any


class Trojan:
    """Looks harmless; its ``__reduce__`` names ``os.system`` instead of itself."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (self.command,)


class NetProbe:
    """An approved class that, once unpickled, tries the network and writes outside
    its directory: the sandbox must stop both (approval trusts code, not its reach)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        import socket

        with contextlib.suppress(Exception):
            socket.create_connection(("127.0.0.1", state["port"]), timeout=2).close()
        with contextlib.suppress(Exception), open(state["outside"], "w") as f:
            f.write("escaped")
        self.__dict__.update(state)
