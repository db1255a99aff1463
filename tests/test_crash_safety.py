"""Crash safety: a writer killed at any moment leaves the old bundle or the new one.

A "zygote" process imports the package once; for each trial it forks a child
that saves and signs bundles to one target in a loop (save model A or B signed
by key 1, then countersign with key 2), and the test SIGKILLs that child after
a random delay. The target must then be byte-for-byte one of the four complete
bundles that loop can produce (computed beforehand in this process), never a
partial file once a sign journal it may leave has been rolled back
(``bundle.repair``: an in-place sign rewrites the file's tail behind an undo
journal). A kill can leave the temporary file of the save it interrupted:
it is named ``.<target name>.<random>.tmp`` in the target's directory
(``bundle/_writer.py``, ``tempfile.mkstemp``); no later write removes it, so at
most one such file per kill may remain, and nothing else.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import tiny_model

import bundle

TRIALS = 60
TESTS = Path(__file__).resolve().parent

ZYGOTE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import bundle
    from helpers import tiny_model

    key1, key2 = bundle.load_private_key(sys.argv[2]), bundle.load_private_key(sys.argv[3])
    target, warm = sys.argv[4], sys.argv[5]
    models = [tiny_model(0), tiny_model(1)]
    bundle.save(models[0], warm, signing_key=key1, name="tiny")  # lazy imports, now
    bundle.sign(warm, key2)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "go":
            pid = os.fork()
            if pid == 0:
                try:
                    i = int(arg)
                    while True:
                        bundle.save(models[i % 2], target, signing_key=key1, name="tiny")
                        bundle.sign(target, key2)
                        i += 1
                finally:
                    os._exit(0)
            print(pid, flush=True)
        elif cmd == "reap":
            print(os.waitpid(int(arg), 0)[1], flush=True)
""")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    k1, _ = bundle.generate_key().save(d / "k1")
    k2, _ = bundle.generate_key("ed25519").save(d / "k2")
    return k1, k2


def _states(tmp: Path, k1: Path, k2: Path) -> tuple[dict[bytes, str], float]:
    """The four complete bundles the loop writes, and how long one save+sign cycle takes."""
    key1, key2 = bundle.load_private_key(k1), bundle.load_private_key(k2)
    states = {}
    start = time.perf_counter()
    for label, seed in (("A", 0), ("B", 1)):
        p = tmp / f"{label}.mbundle"
        bundle.save(tiny_model(seed), p, signing_key=key1, name="tiny")
        states[p.read_bytes()] = f"{label} signed by key 1"
        bundle.sign(p, key2)
        states[p.read_bytes()] = f"{label} signed by keys 1 and 2"
    assert len(states) == 4
    return states, (time.perf_counter() - start) / 2


@pytest.mark.slow
def test_killed_writer_leaves_a_complete_bundle(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    k1, k2 = keys
    (tmp_path / "expected").mkdir()
    states, cycle = _states(tmp_path / "expected", k1, k2)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "model.mbundle"
    first = next(data for data, label in states.items() if label == "A signed by key 1")
    target.write_bytes(first)
    stray_name = re.compile(r"^\.model\.mbundle\.[A-Za-z0-9_]+\.tmp$")
    zygote = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ZYGOTE,
            str(TESTS),
            str(k1),
            str(k2),
            str(target),
            str(tmp_path / "warm.mbundle"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None
    assert zygote.stdout is not None
    seen: dict[str, int] = {}
    strays: set[str] = set()
    mid_write = 0
    mid_sign = 0
    rng = random.Random(20240601)
    try:
        assert zygote.stdout.readline().strip() == "ready"
        for trial in range(TRIALS):
            zygote.stdin.write(f"go {trial}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0, 2.5 * cycle))
            os.kill(pid, signal.SIGKILL)
            zygote.stdin.write(f"reap {pid}\n")
            zygote.stdin.flush()
            status = int(zygote.stdout.readline())
            assert os.WIFSIGNALED(status), f"trial {trial}: the writer exited by itself"
            assert os.WTERMSIG(status) == signal.SIGKILL

            # a kill inside an in-place sign leaves its undo journal: rolled back here,
            # the target is the bundle that sign began from
            mid_sign += bundle.repair(target)
            data = target.read_bytes()
            assert data in states, (
                f"trial {trial}: target is {len(data)} bytes, not a "
                "complete bundle the writer produced"
            )
            seen[states[data]] = seen.get(states[data], 0) + 1
            others = {p.name for p in out.iterdir()} - {target.name}
            assert all(stray_name.match(n) for n in others), others
            new = others - strays
            assert len(new) <= 1, f"trial {trial}: {len(new)} temporary files from one kill"
            mid_write += bool(new)
            strays |= others
            if trial % 10 == 0:
                report = bundle.verify(
                    target, trusted_keys=[bundle.load_private_key(k1).public_key]
                )
                assert report.verified
    finally:
        zygote.kill()
        zygote.wait()
    print(
        f"{TRIALS} kills: target states {seen}; {mid_write} kills left a temporary file, "
        f"{mid_sign} a sign journal; "
        f"cycle {cycle * 1000:.0f} ms"
    )
    # the kills landed in both states and inside writes, or the test proved nothing
    assert len(seen) >= 2, seen
    assert mid_write >= 3, f"only {mid_write} of {TRIALS} kills interrupted a write"
    assert len(strays) <= TRIALS
    # a write after the crashes works and leaves the strays as they were
    bundle.save(tiny_model(0), target, signing_key=bundle.load_private_key(k1), name="tiny")
    assert target.read_bytes() == first
    assert {p.name for p in out.iterdir()} - {target.name} == strays


def test_exception_inside_a_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while the temporary file is being written changes nothing."""
    from bundle.format.archive import ZipWriter

    k1, k2 = keys
    target = tmp_path / "model.mbundle"
    bundle.save(tiny_model(0), target, signing_key=bundle.load_private_key(k1), name="tiny")
    before = target.read_bytes()

    def fail(self: ZipWriter) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ZipWriter, "close", fail)
    for write in (
        lambda: bundle.save(
            tiny_model(1), target, name="tiny", signing_key=bundle.load_private_key(k1)
        ),
        lambda: bundle.sign(target, bundle.load_private_key(k2)),
    ):
        with pytest.raises(OSError, match="No space"):
            write()
        assert target.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == [target.name]
