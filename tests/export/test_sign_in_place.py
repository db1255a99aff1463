"""Signing in place: one verify, the tail rewritten behind an undo journal, same bytes as a copy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import count_hashed, save_tiny

import bundle
from bundle.errors import BundleError, IntegrityError
from bundle.export import writer
from bundle.format.archive import ZipReader
from bundle.format.manifest import MANIFEST_NAME


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (the in-process undo is off)."""


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key("ecdsa-p256")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> Path:
    return save_tiny(tmp_path_factory.mktemp("sign") / "src.mbundle", key)


@pytest.fixture
def path(tmp_path: Path, source: Path) -> Path:
    p = tmp_path / "b.mbundle"
    p.write_bytes(source.read_bytes())
    return p


def _manifest_end(path: Path) -> int:
    with ZipReader(path) as r:
        m = r.entries[MANIFEST_NAME]
        return m.data_offset + m.compressed_size


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_in_place_gives_the_bytes_of_a_full_rewrite(
    tmp_path: Path, source: Path, key: bundle.PrivateKey, key_type: str
) -> None:
    # several new keys: their ids sort before and after the existing signature
    news = [bundle.generate_key(key_type) for _ in range(3)]
    a, b = tmp_path / "a.mbundle", tmp_path / "b.mbundle"
    a.write_bytes(source.read_bytes())
    b.write_bytes(source.read_bytes())
    ino = a.stat().st_ino
    for k in news:
        bundle.sign(a, k, trusted_keys=key.public_key)
        bundle.sign(b, k, trusted_keys=key.public_key, in_place=False)
        assert a.read_bytes() == b.read_bytes()  # ECDSA here is RFC 6979: deterministic
    assert a.stat().st_ino == ino  # the same file, written in place
    bundle.sign(a, news[0])  # the same key again: replaced, not added
    assert a.read_bytes() == b.read_bytes()
    trust = bundle.TrustStore([key.public_key, *(k.public_key for k in news)], threshold=4)
    assert len(bundle.verify(a, trusted_keys=trust).signers) == 4
    assert _files(tmp_path) == ["a.mbundle", "b.mbundle"]  # no journal, no temp file left


def test_an_unsigned_bundle_gets_its_first_signature_in_place(tmp_path: Path) -> None:
    k = bundle.generate_key("ed25519")
    a, b = save_tiny(tmp_path / "a.mbundle"), save_tiny(tmp_path / "b.mbundle")
    bundle.sign(a, k)
    bundle.sign(b, k, in_place=False)
    assert a.read_bytes() == b.read_bytes()
    assert bundle.verify(a, trusted_keys=k.public_key).signers[0].key_id == k.key_id


def test_only_the_tail_is_written(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    end, size = _manifest_end(path), path.stat().st_size
    ino = path.stat().st_ino
    writes: list[tuple[int, int]] = []
    real = writer._write_at

    def record(fd: int, data: bytes, offset: int) -> None:
        if os.fstat(fd).st_ino == ino:
            writes.append((offset, len(data)))
        real(fd, data, offset)

    monkeypatch.setattr(writer, "_write_at", record)
    original = path.read_bytes()
    bundle.sign(path, bundle.generate_key())
    assert writes
    assert all(offset >= end for offset, _ in writes)
    assert sum(n for _, n in writes) < 16 << 10  # a signature and a central directory
    assert path.read_bytes()[:end] == original[:end]
    assert path.stat().st_size > size


def test_signing_again_with_the_same_key_writes_nothing(path: Path, key: bundle.PrivateKey) -> None:
    before = path.stat()
    bundle.sign(path, key)
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def _crash_after(monkeypatch: pytest.MonkeyPatch, path: Path, n: int | None) -> None:
    """The bundle's next in-place write stops ``n`` bytes into what it changes (None: the
    truncate fails)."""
    ino = path.stat().st_ino
    real = writer._write_at

    def torn(fd: int, data: bytes, offset: int) -> None:
        if os.fstat(fd).st_ino != ino or n is None:
            return real(fd, data, offset)
        # n bytes past the first one that changes (the tail may begin with an existing
        # signature written again as it was)
        old = os.pread(fd, len(data), offset)
        same = next((i for i, (a, b) in enumerate(zip(data, old, strict=False)) if a != b), 0)
        real(fd, data[: same + n], offset)
        raise Crash

    monkeypatch.setattr(writer, "_write_at", torn)
    monkeypatch.setattr(writer, "_undo", lambda p: None)  # a dead process undoes nothing
    if n is None:

        def cut(fd: int, length: int) -> None:
            raise Crash

        monkeypatch.setattr(os, "ftruncate", cut)


@pytest.mark.parametrize("n", [0, 1, 30, 700, 1 << 20, None])
def test_a_crash_while_writing_is_rolled_back_exactly(
    path: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch, n: int | None
) -> None:
    k2 = bundle.generate_key("ed25519")
    expected = path.parent / "expected.mbundle"
    expected.write_bytes(path.read_bytes())
    bundle.sign(expected, k2, in_place=False)
    original = path.read_bytes()
    with monkeypatch.context() as m:
        _crash_after(m, path, n)
        with pytest.raises(Crash):
            bundle.sign(path, k2)
    journal = writer.journal_path(path)
    assert journal.exists()
    torn = path.read_bytes()
    assert torn[: _manifest_end(expected)] == original[: _manifest_end(expected)]
    if n == 0:  # nothing changed yet
        assert torn == original
    elif n is None or n > len(torn):  # all written, not yet truncated: the file is complete
        assert torn == expected.read_bytes()
    else:  # a torn tail fails verification, whatever it is asked to trust
        assert torn not in (original, expected.read_bytes())
        for trusted in (key.public_key, k2.public_key):
            with pytest.raises(BundleError):
                bundle.verify(path, trusted_keys=trusted)
    complete = torn == expected.read_bytes()
    assert bundle.repair(path) is not complete  # a complete new file is kept as signed
    assert path.read_bytes() == (expected.read_bytes() if complete else original)
    assert not journal.exists()
    assert bundle.repair(path) is False
    bundle.sign(path, k2)
    assert path.read_bytes() == expected.read_bytes()


def test_sign_refuses_after_an_interrupted_sign_until_repaired(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k2, k3 = bundle.generate_key(), bundle.generate_key("ed25519")
    expected = path.parent / "expected.mbundle"
    expected.write_bytes(path.read_bytes())
    bundle.sign(expected, k3, in_place=False)
    with monkeypatch.context() as m:
        _crash_after(m, path, 40)
        with pytest.raises(Crash):
            bundle.sign(path, k2)
    torn = path.read_bytes()
    with pytest.raises(bundle.IntegrityError, match="repair"):
        bundle.sign(path, k3)  # never rolled back implicitly: the user judges the journal
    assert path.read_bytes() == torn
    assert bundle.repair(path)
    bundle.sign(path, k3)  # the interrupted k2 signature is gone, k3's added
    assert path.read_bytes() == expected.read_bytes()
    assert not writer.journal_path(path).exists()


def _plant(path: Path, tail: bytes, start: int = 1) -> Path:
    """A journal as writer.py writes one, claiming ``tail`` was the file's old end."""
    st = path.stat()
    with path.open("rb") as f:
        guard = hashlib.sha256(f.read(start)[-4096:]).hexdigest()
    header = {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "start": start,
        "old_size": start + len(tail),
        "old_tail_sha256": hashlib.sha256(tail).hexdigest(),
        "new_size": st.st_size,
        "new_tail_sha256": "0" * 64,
        "guard_sha256": guard,
    }
    jpath = writer.journal_path(path)
    jpath.write_bytes(
        writer.JOURNAL_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + tail
    )
    return jpath


@pytest.mark.parametrize("how", ["group-writable", "hard link", "symlink", "fifo", "bad fields"])
def test_a_planted_journal_is_never_applied(path: Path, how: str) -> None:
    """Whoever else may write the directory cannot make repair write their bytes."""
    original = path.read_bytes()
    jpath = _plant(path, b"ATTACKER BYTES")
    if how == "group-writable":
        jpath.chmod(0o664)
    elif how == "hard link":
        os.link(jpath, path.parent / "elsewhere")
    elif how == "symlink":
        real = path.parent / "real-journal"
        jpath.rename(real)
        jpath.symlink_to(real)
    elif how == "fifo":
        jpath.unlink()
        os.mkfifo(jpath)
    else:
        raw = jpath.read_bytes().replace(b'"start": 1', b'"start": -1')
        jpath.write_bytes(raw)
    with pytest.raises(bundle.IntegrityError, match="not a journal this package wrote"):
        bundle.repair(path)
    assert path.read_bytes() == original
    assert os.path.lexists(jpath)  # left for the user to look at
    with pytest.raises(bundle.IntegrityError, match="repair"):
        bundle.sign(path, bundle.generate_key())
    assert path.read_bytes() == original


def test_repair_does_not_follow_a_link_at_the_bundles_name(path: Path) -> None:
    victim = path.parent / "victim.txt"
    victim.write_bytes(b"precious")
    link = path.parent / "link.mbundle"
    link.symlink_to(victim)
    jpath = _plant(link, b"ATTACKER BYTES")  # for the file the link points to
    jpath.chmod(0o600)
    with pytest.raises(bundle.IntegrityError, match="link is not followed"):
        bundle.repair(link)
    assert victim.read_bytes() == b"precious"


def test_a_failed_write_is_undone_at_once(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = path.read_bytes()
    ino = path.stat().st_ino
    real = writer._write_at
    calls = [0]

    def full_disk(fd: int, data: bytes, offset: int) -> None:
        if os.fstat(fd).st_ino == ino:
            calls[0] += 1
            if calls[0] == 1:  # the sign's write, not the undo's
                real(fd, data[:100], offset)
                raise OSError(28, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(writer, "_write_at", full_disk)
    with pytest.raises(OSError, match="No space"):
        bundle.sign(path, bundle.generate_key())
    assert path.read_bytes() == original
    assert _files(path.parent) == ["b.mbundle"]


def test_a_real_crash_in_another_process(path: Path, key: bundle.PrivateKey) -> None:
    original = path.read_bytes()
    code = textwrap.dedent(
        """
        import os, sys
        import bundle
        from bundle.export import writer
        path = sys.argv[1]
        ino = os.stat(path).st_ino
        real = writer._write_at
        def die(fd, data, offset):
            if os.fstat(fd).st_ino == ino:
                real(fd, data[: len(data) // 2], offset)
                os._exit(9)
            real(fd, data, offset)
        writer._write_at = die
        bundle.sign(path, bundle.generate_key())
        """
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True)
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    assert writer.journal_path(path).exists()
    with pytest.raises(BundleError, match="model-bundle repair"):
        bundle.verify(path, trusted_keys=key.public_key)
    assert bundle.repair(path)
    assert path.read_bytes() == original
    assert bundle.verify(path, trusted_keys=key.public_key).verified


def test_a_journal_cut_short_is_discarded(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = path.read_bytes()
    with monkeypatch.context() as m:
        _crash_after(m, path, 0)
        with pytest.raises(Crash):
            bundle.sign(path, bundle.generate_key())
    journal = writer.journal_path(path)
    whole = journal.read_bytes()
    for cut in (10, len(writer.JOURNAL_MAGIC) + 20, len(whole) - 1):
        journal.write_bytes(whole[:cut])  # the crash came while the journal was written
        assert bundle.repair(path) is False
        assert not journal.exists()
        assert path.read_bytes() == original


def test_a_journal_is_not_applied_to_another_file(
    path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted() -> bytes:
        with monkeypatch.context() as m:
            _crash_after(m, path, 50)
            with pytest.raises(Crash):
                bundle.sign(path, bundle.generate_key())
        return path.read_bytes()

    end = _manifest_end(path)
    interrupted()
    header = json.loads(writer.journal_path(path).read_bytes().split(b"\n")[1])
    assert header["start"] == end
    replacement = path.parent / "new.mbundle"
    replacement.write_bytes(source.read_bytes())
    os.replace(replacement, path)  # a save put another bundle there since: stale journal
    assert bundle.repair(path) is False
    assert path.read_bytes() == source.read_bytes()
    assert not writer.journal_path(path).exists()

    torn = interrupted()
    with open(path, "r+b") as f:  # someone wrote into the file before the signatures
        f.seek(end - 10)
        f.write(b"0123456789")
    with pytest.raises(IntegrityError, match="changed since"):
        bundle.repair(path)
    assert writer.journal_path(path).exists()
    assert path.read_bytes() != torn


@pytest.mark.parametrize("in_place", [True, False])
def test_a_file_changed_between_verify_and_write_is_not_signed(
    path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool
) -> None:
    real = writer.statement_for

    def then_touch(*a: Any) -> bytes:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return real(*a)

    monkeypatch.setattr(writer, "statement_for", then_touch)
    original = path.read_bytes()
    with pytest.raises(IntegrityError, match="changed while it was being signed"):
        bundle.sign(path, bundle.generate_key(), in_place=in_place)
    assert path.read_bytes() == original
    assert _files(path.parent) == ["b.mbundle"]


def test_a_reader_that_met_a_sign_in_flight_reads_again(
    path: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:

    with monkeypatch.context() as m:
        _crash_after(m, path, 60)
        with pytest.raises(Crash):
            bundle.sign(path, bundle.generate_key())
    waits: list[float] = []

    def sign_finishes(seconds: float) -> None:  # the writer finishes while this one waits
        waits.append(seconds)
        bundle.repair(path)

    monkeypatch.setattr(time, "sleep", sign_finishes)
    assert bundle.verify(path, trusted_keys=key.public_key).verified
    assert len(waits) == 1


def test_hard_links_see_an_in_place_signature_and_keep_a_copied_one(
    path: Path, key: bundle.PrivateKey
) -> None:
    link = path.parent / "link.mbundle"
    os.link(path, link)
    k2, k3 = bundle.generate_key(), bundle.generate_key()
    bundle.sign(path, k2)
    assert link.read_bytes() == path.read_bytes()
    bundle.sign(path, k3, in_place=False)  # a new file under this name only
    assert link.read_bytes() != path.read_bytes()
    assert {s.key_id for s in bundle.verify(link, trusted_keys=k2.public_key).signers} == {
        k2.key_id
    }


def test_cli_sign_in_place_or_copy_and_repair(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bundle.cli import main

    k2 = bundle.generate_key("ed25519")
    key_file = tmp_path / "k2.pem"
    key_file.write_bytes(k2.private_pem())
    copy = tmp_path / "copy.mbundle"
    copy.write_bytes(path.read_bytes())
    original = path.read_bytes()
    with monkeypatch.context() as m:
        _crash_after(m, path, 10)
        with pytest.raises(Crash):
            main(["sign", str(path), "--key", str(key_file)])
    assert main(["repair", str(path)]) == 0
    assert "rolled" in capsys.readouterr().out
    assert path.read_bytes() == original
    assert main(["sign", str(path), "--key", str(key_file)]) == 0
    assert main(["sign", str(copy), "--key", str(key_file), "--copy"]) == 0
    assert path.read_bytes() == copy.read_bytes()
    assert main(["repair", str(path)]) == 0
    assert "no interrupted sign" in capsys.readouterr().out


def test_a_verified_handle_is_signed_without_hashing_again(
    path: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:

    k2 = bundle.generate_key("ed25519")
    expected = path.parent / "expected.mbundle"
    expected.write_bytes(path.read_bytes())
    bundle.sign(expected, k2, in_place=False)
    hashed = count_hashed(monkeypatch)
    with bundle.verified(path, trusted_keys=key.public_key) as v:
        assert [s.key_id for s in v.report.signers] == [key.key_id]
        once = sum(hashed)
        assert once > 0
        report = bundle.sign(v, k2)
    assert sum(hashed) == once  # the weights were hashed by the verify, not again
    assert [s.key_id for s in report.signers] == [k2.key_id]
    assert path.read_bytes() == expected.read_bytes()
    with pytest.raises(ValueError, match="closed"):
        bundle.sign(v, k2)  # a handle signs once


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("change", ["touch", "append", "replace"])
def test_a_verified_handle_of_a_changed_file_is_not_signed(
    path: Path, source: Path, key: bundle.PrivateKey, change: str, in_place: bool
) -> None:
    with bundle.verified(path, trusted_keys=key.public_key) as v:
        if change == "touch":
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        elif change == "append":
            with open(path, "ab") as f:
                f.write(b"x")
        else:
            other = path.parent / "other.mbundle"
            other.write_bytes(source.read_bytes())
            os.replace(other, path)
        now = path.read_bytes()
        with pytest.raises(IntegrityError, match=r"changed|replaced"):
            bundle.sign(v, bundle.generate_key(), in_place=in_place)
    assert path.read_bytes() == now
    assert _files(path.parent) == ["b.mbundle"]


def test_a_verified_handle_takes_no_second_policy(path: Path, key: bundle.PrivateKey) -> None:
    v = bundle.verified(path, trusted_keys=key.public_key)
    with pytest.raises(TypeError, match=r"bundle\.verified"):
        bundle.sign(v, bundle.generate_key(), trusted_keys=key.public_key)
    with pytest.raises(ValueError, match="closed"):
        bundle.sign(v, bundle.generate_key())


def test_a_file_that_may_not_be_written_is_signed_by_copy(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k2 = bundle.generate_key("ed25519")
    other = tmp_path / "other.mbundle"
    other.write_bytes(path.read_bytes())
    bundle.sign(other, k2)
    ino = path.stat().st_ino
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == path else real(p, mode, **kw)
    )
    bundle.sign(path, k2)  # a read-only file: a new one renamed over it, as before
    assert path.stat().st_ino != ino
    assert path.read_bytes() == other.read_bytes()


def test_a_sign_interrupted_after_its_fsync_is_kept(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k2 = bundle.generate_key("ed25519")
    expected = path.parent / "expected.mbundle"
    expected.write_bytes(path.read_bytes())
    bundle.sign(expected, k2, in_place=False)
    journal = writer.journal_path(path)
    real = os.unlink

    def crash_on_journal(p: Any, *a: Any, **kw: Any) -> None:
        if Path(p) == journal:
            raise Crash
        real(p, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(os, "unlink", crash_on_journal)
        with pytest.raises(Crash):
            bundle.sign(path, k2)
    assert journal.exists()
    assert bundle.repair(path) is False  # nothing undone: the new file is complete
    assert not journal.exists()
    assert path.read_bytes() == expected.read_bytes()


def test_a_sign_never_interleaves_with_another_through_any_name(path: Path) -> None:
    """The in-place write holds the inode's lock: another sign, even through a hard
    link (whose journal is another file), is refused, not interleaved."""
    import fcntl

    other_name = path.parent / "same-inode.mbundle"
    os.link(path, other_name)
    original = path.read_bytes()
    with path.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a running sign holds
        for name in (path, other_name):
            with pytest.raises(bundle.IntegrityError, match="locked"):
                bundle.sign(name, bundle.generate_key())
        assert path.read_bytes() == original
    late = bundle.generate_key()
    signed = bundle.sign(other_name, late)  # released: signs
    assert [s.key_id for s in signed.signers] == [late.key_id]
    assert path.read_bytes() == other_name.read_bytes() != original
