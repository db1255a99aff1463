"""A class a user might approve: it claims to be a model, but pickles as os.system."""

from __future__ import annotations

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

        try:
            socket.create_connection(("127.0.0.1", state["port"]), timeout=2).close()
        except Exception:  # noqa: BLE001,S110 -- the test looks at the server, not here
            pass
        try:
            with open(state["outside"], "w") as f:
                f.write("escaped")
        except Exception:  # noqa: BLE001,S110
            pass
        self.__dict__.update(state)
