"""One writer of the race test: promote NAME@ALIAS N times, alternating two versions.

    python racer.py URL OPTIONS_JSON KEY_PEM WRITER_ID N START_FILE

Waits for START_FILE to exist so that both writers begin together; prints the seqs won.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bundle


def main() -> None:
    url, options, key_path, writer, n, start = sys.argv[1:7]
    key = bundle.load_private_key(key_path)
    store = bundle.Store(
        url,
        storage_options=json.loads(options) or None,
        trust=bundle.TrustPolicy(keys=key.public_key),
        cache_dir=Path(start).parent / f"cache-{writer}",
    )
    deadline = time.monotonic() + 60
    while not Path(start).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    won = []
    for i in range(int(n)):
        rec = store.promote(
            "tiny", "production", "1" if i % 2 else "2", signing_key=key, reason=f"{writer}:{i}"
        )
        won.append(rec.seq)
    print(json.dumps(won))


if __name__ == "__main__":
    main()
