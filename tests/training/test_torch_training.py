"""Training state: save model + optimizer (+ scheduler, RNG), restore, continue -- no pickle."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")
import torch
from torch import nn

import bundle
from bundle.training import torch as training


class Net(nn.Module):
    """Conv + BatchNorm + Dropout: parameters, buffers, and RNG use in training."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(3 * 4 * 4, hidden)
        self.out = nn.Linear(hidden, 3)

    def forward(self, x: Any) -> Any:
        h = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.out(torch.relu(self.fc(self.drop(torch.flatten(h, 1)))))


def batch(i: int) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(1000 + i)
    return torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)


SAMPLE = batch(-1)[0][:3]

OPTIMIZERS = {
    "adam": (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-4}),
    "sgd-momentum": (torch.optim.SGD, {"lr": 5e-2, "momentum": 0.9, "nesterov": True}),
}


def fresh(kind: str, seed: int = 0, lr: float | None = None) -> tuple[Any, Any, Any]:
    torch.manual_seed(seed)
    model = Net()
    cls, kw = OPTIMIZERS[kind]
    opt = cls(model.parameters(), **{**kw, **({"lr": lr} if lr else {})})
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train(model: Any, opt: Any, sched: Any, steps: range) -> None:
    model.train()
    for i in steps:
        x, y = batch(i)
        opt.zero_grad()
        # torch leaves Tensor.backward unannotated
        nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    k = bundle.generate_key()
    _, pub = k.save(tmp_path_factory.mktemp("key") / "k")
    return k, pub


K = 3


@pytest.fixture(scope="module", params=list(OPTIMIZERS))
def checkpoint(
    request: pytest.FixtureRequest, key: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict[str, Any]]:
    """k steps, saved with optimizer, scheduler and RNG; plus 2k uninterrupted steps."""
    kind = request.param
    model, opt, sched = fresh(kind)
    torch.manual_seed(7)
    train(model, opt, sched, range(K))
    path = tmp_path_factory.mktemp(kind) / "ckpt.mbundle"
    bundle.save(
        model,
        path,
        sample_input=SAMPLE,
        signing_key=key[0],
        optimizer=opt,
        scheduler=sched,
        include_rng=True,
    )
    ref, ropt, rsched = fresh(kind)
    torch.manual_seed(7)
    train(ref, ropt, rsched, range(2 * K))
    return kind, path, {"model": ref, "optimizer": ropt, "scheduler": rsched}


@pytest.mark.slow
def test_resume_matches_uninterrupted_training(
    checkpoint: tuple[str, Path, dict[str, Any]], key: tuple[Any, Path]
) -> None:
    kind, path, ref = checkpoint
    model, opt, sched = fresh(kind, seed=123, lr=7.0)  # different weights and lr: all replaced
    torch.manual_seed(99)  # replaced by the saved RNG state
    report = bundle.restore(path, model, opt, sched, trusted_keys=key[1])
    assert report.verified
    assert sched.last_epoch == K
    train(model, opt, sched, range(K, 2 * K))
    for (name, want), (_, got) in zip(
        ref["model"].state_dict().items(), model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=name)
    assert sched.get_last_lr() == ref["scheduler"].get_last_lr()
    want_state = ref["optimizer"].state_dict()
    got_state = opt.state_dict()
    assert got_state["param_groups"] == want_state["param_groups"]
    for idx, st in want_state["state"].items():
        for k, v in st.items():
            torch.testing.assert_close(got_state["state"][idx][k], v, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_state_is_keyed_by_parameter_name(checkpoint: tuple[str, Path, dict[str, Any]]) -> None:
    _kind, path, _ = checkpoint
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read(training.STATE_JSON))
        names = set(z.namelist())
    assert {training.STATE_JSON, training.STATE_TENSORS} <= names
    assert not any(n.endswith((".pkl", ".pt", ".pth", ".bin")) for n in names)
    opt = doc["optimizer"]
    assert set(opt["state"]) == {
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "fc.weight",
        "fc.bias",
        "out.weight",
        "out.bias",
    }
    assert opt["param_groups"][0]["params"][0] == "conv.weight"
    assert doc["scheduler"]["class"] == "torch.optim.lr_scheduler.StepLR"
    assert doc["rng"]["type"] == "dict"
    man = bundle.inspect(path).manifest
    assert {f.path: f.role for f in man.files}[training.STATE_JSON] == "training_state"


@pytest.mark.slow
def test_restore_without_trust_is_refused(checkpoint: tuple[str, Path, dict[str, Any]]) -> None:
    kind, path, _ = checkpoint
    model, opt, _ = fresh(kind, seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(bundle.SignatureError):
        bundle.restore(path, model, opt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.slow
def test_mismatches_are_listed_and_nothing_is_loaded(
    checkpoint: tuple[str, Path, dict[str, Any]], key: tuple[Any, Path]
) -> None:
    kind, path, _ = checkpoint
    torch.manual_seed(11)
    other = Net(hidden=5)
    other.extra = nn.Linear(2, 2)
    groups: list[dict[str, Any]] = [
        {"params": other.conv.parameters()},
        {"params": list(other.fc.parameters())},
    ]
    opt = (
        torch.optim.Adam(other.parameters()) if kind == "sgd-momentum" else torch.optim.Adam(groups)
    )
    before = {k: v.clone() for k, v in other.state_dict().items()}
    opt_before = json.dumps(str(opt.state_dict()))
    with pytest.raises(bundle.InputError) as info:
        bundle.restore(path, other, opt, trusted_keys=key[1])
    text = str(info.value)
    assert "fc.weight: shape [5, 48] in the model, [8, 48] in the bundle" in text
    assert "out.weight: shape [3, 5]" in text
    assert "extra.weight" in text
    assert "extra.bias" in text
    if kind == "sgd-momentum":
        assert "holds a torch.optim.sgd.SGD state" in text
    else:
        assert "2 param group(s) given, 1 saved" in text
    assert "nothing was loaded" in text
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert json.dumps(str(opt.state_dict())) == opt_before


@pytest.mark.slow
def test_optimizer_parameter_names_must_match(
    checkpoint: tuple[str, Path, dict[str, Any]], key: tuple[Any, Path]
) -> None:
    kind, path, _ = checkpoint
    model = Net()
    cls, kw = OPTIMIZERS[kind]
    params = list(model.parameters())
    opt = cls(params[::-1], **kw)  # same parameters, other order
    with pytest.raises(bundle.InputError, match="param group 0: parameters differ"):
        bundle.restore(path, model, opt, trusted_keys=key[1])


def test_model_only_restore_and_no_optimizer_state(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = Net()
    # BatchNorm2d(track_running_stats=True) has these buffers; torch types them Optional
    assert model.bn.running_mean is not None
    assert model.bn.num_batches_tracked is not None
    with torch.no_grad():
        model.bn.running_mean.add_(0.5)
        model.bn.num_batches_tracked += 3
    path = tmp_path / "m.mbundle"
    bundle.save(model, path, sample_input=SAMPLE)
    torch.manual_seed(5)
    other = Net()
    bundle.restore(path, other, allow_unsigned=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(bundle.InputError, match="no optimizer state"):
        bundle.restore(path, other, torch.optim.SGD(other.parameters(), lr=1), allow_unsigned=True)


def test_bundle_without_training_state(tmp_path: Path) -> None:
    path = tmp_path / "m.mbundle"
    bundle.save(Net(), path, sample_input=SAMPLE, training_state=False)
    with pytest.raises(bundle.InputError, match="no training state"):
        bundle.restore(path, Net(), allow_unsigned=True)
    with pytest.raises(ValueError, match="contradicts"):
        bundle.save(Net(), path, sample_input=SAMPLE, training_state=False, include_rng=True)


@pytest.mark.slow
def test_tampered_training_state_is_refused(
    checkpoint: tuple[str, Path, dict[str, Any]], key: tuple[Any, Path], tmp_path: Path
) -> None:
    kind, path, _ = checkpoint
    data = bytearray(path.read_bytes())
    from bundle.format.archive import ZipReader

    with ZipReader(path) as reader:
        entry = reader.entries[training.STATE_TENSORS]
    assert entry.stored
    data[entry.data_offset + entry.size - 3] ^= 0xFF  # one byte of the optimizer tensors
    bad = tmp_path / "bad.mbundle"
    bad.write_bytes(bytes(data))
    model, opt, _ = fresh(kind)
    with pytest.raises((bundle.IntegrityError, bundle.FormatError)):
        bundle.restore(bad, model, opt, trusted_keys=key[1])


def test_restore_uses_the_hashed_training_bytes(
    checkpoint: tuple[str, Path, dict[str, Any]],
    key: tuple[Any, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The optimizer tensors restored are those verification hashed, read once: a change
    to the file after hashing is neither seen nor a reason to read the entry again."""
    import shutil

    from helpers import swap_after_hashing

    kind, path, _ = checkpoint
    copy = tmp_path / "copy.mbundle"
    shutil.copyfile(path, copy)
    want_model, want_opt, _ = fresh(kind)
    bundle.restore(path, want_model, want_opt, trusted_keys=key[1])
    reads = swap_after_hashing(monkeypatch, [training.STATE_TENSORS])
    model, opt, _ = fresh(kind)
    bundle.restore(copy, model, opt, trusted_keys=key[1])
    assert training.STATE_TENSORS not in reads
    for (k, a), (_, b) in zip(
        want_model.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert repr(opt.state_dict()) == repr(want_opt.state_dict())


def test_tied_weights_are_stored_once(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.dec = nn.Linear(4, 10, bias=False)
            self.dec.weight = self.emb.weight

        def forward(self, tokens: Any) -> Any:
            return self.dec(self.emb(tokens).mean(1))

    torch.manual_seed(0)
    model = Tied()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randint(0, 10, (4, 3))).sum().backward()
    opt.step()
    path = tmp_path / "t.mbundle"
    bundle.save(model, path, sample_input=torch.randint(0, 10, (2, 3)), optimizer=opt)
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read(training.STATE_JSON))
    listed = {t["name"]: t for t in doc["model"]["tensors"]}
    assert listed["emb.weight"]["key"] == listed["dec.weight"]["key"]
    assert listed["emb.weight"]["source"] == "weights"
    assert list(doc["optimizer"]["state"]) == ["emb.weight"]
    torch.manual_seed(1)
    other = Tied()
    oopt = torch.optim.Adam(other.parameters(), lr=0.1)
    bundle.restore(path, other, oopt, allow_unsigned=True)
    assert other.dec.weight is other.emb.weight
    torch.testing.assert_close(other.emb.weight, model.emb.weight, rtol=0, atol=0)


# --------------------------------------------------------------------------- typed JSON


def test_typed_tree_round_trips_exactly() -> None:
    value: dict[str | int, Any] = {
        "lr": 1e-3,
        "inf": math.inf,
        "-inf": -math.inf,
        "nan": math.nan,
        "neg0": -0.0,
        "big": 2**70,
        "flag": True,
        "none": None,
        "name": "ünïcode",
        "betas": (0.9, 0.999),
        "nested": [{"a": [1, (2, 3)]}, []],
        3: "int key",
        "3": "str key",
        "t": torch.arange(6, dtype=torch.float64).reshape(2, 3),
        "bf": torch.ones(2, dtype=torch.bfloat16),
        "scalar": torch.tensor(4.0),
        "empty": torch.zeros(0, 3),
        "dtype": torch.float16,
        "np": np.arange(4, dtype=np.uint32),
    }
    enc = training._Encoder()
    doc = enc.encode(value, ("x",))
    raw = bundle.format.canonical_json.dumps(doc)  # canonical JSON: no NaN/Infinity literals
    assert b"NaN" not in raw
    assert b"Infinity" not in raw
    from safetensors.torch import save

    st = save(enc.tensors)
    dec = training._Decoder(training._tensors_of(st, "t"))
    back = dec.decode(bundle.format.canonical_json.loads(raw, what="t"), "x")
    assert list(back) == list(value)
    assert math.isnan(back["nan"])
    assert back["inf"] == math.inf
    assert back["-inf"] == -math.inf
    assert math.copysign(1, back["neg0"]) == -1
    assert back["betas"] == (0.9, 0.999)
    assert isinstance(back["betas"], tuple)
    assert back["nested"] == [{"a": [1, (2, 3)]}, []]
    assert back[3] == "int key"
    assert back["3"] == "str key"
    assert back["big"] == 2**70
    assert back["dtype"] is torch.float16
    for k in ("t", "bf", "scalar", "empty"):
        assert back[k].dtype == value[k].dtype, k
        assert torch.equal(back[k], value[k]), k
    assert back["np"].dtype == np.uint32
    assert (back["np"] == value["np"]).all()


def test_unstorable_value_names_its_key(tmp_path: Path) -> None:
    class Warmup(torch.optim.lr_scheduler.LRScheduler):
        def __init__(self, opt: Any) -> None:
            self.shape: Callable[[int], float] = lambda step: min(1.0, (step + 1) / 10)
            super().__init__(opt)

        def get_lr(self) -> list[float | torch.Tensor]:
            return [b * self.shape(self.last_epoch) for b in self.base_lrs]

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(bundle.ConversionError, match=r"scheduler\['shape'\] is a function"):
        bundle.save(
            model, tmp_path / "x.mbundle", sample_input=SAMPLE, optimizer=opt, scheduler=Warmup(opt)
        )
    assert not (tmp_path / "x.mbundle").exists()


def test_scheduler_with_infinite_best_round_trips(tmp_path: Path) -> None:
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    assert sched.best == math.inf
    path = tmp_path / "p.mbundle"
    bundle.save(model, path, sample_input=SAMPLE, optimizer=opt, scheduler=sched)
    other = Net()
    oopt = torch.optim.SGD(other.parameters(), lr=0.1)
    osched = torch.optim.lr_scheduler.ReduceLROnPlateau(oopt, patience=5)
    bundle.restore(path, other, oopt, osched, allow_unsigned=True)
    assert osched.best == math.inf
    assert osched.patience == 0


CHILD = textwrap.dedent("""
    import json, sys
    events = []
    sys.addaudithook(lambda e, a: events.append(e) if e.startswith("pickle.") else None)
    import torch
    real_load = torch.load
    def no_load(*a, **k):
        events.append("torch.load")
        return real_load(*a, **k)
    torch.load = no_load
    sys.path.insert(0, sys.argv[3])
    from test_torch_training import fresh
    import bundle
    model, opt, sched = fresh(sys.argv[2])
    bundle.restore(sys.argv[1], model, opt, sched, allow_unsigned=True)
    print(json.dumps({"events": sorted(set(events)), "epoch": sched.last_epoch}))
""")


@pytest.mark.slow
def test_restore_never_unpickles(checkpoint: tuple[str, Path, dict[str, Any]]) -> None:
    kind, path, _ = checkpoint
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), kind, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"events": [], "epoch": K}


def test_sharded_training_state_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optimizer state larger than the shard size is recorded in shards and restores."""
    from bundle.format import digest
    from bundle.format.manifest import Manifest

    monkeypatch.setattr(digest, "SHARD_SIZE", digest.MIN_SHARD_SIZE)
    torch.manual_seed(6)
    model = Net(hidden=12288)  # ~630 k parameters: Adam moments of ~5 MB > 4 MiB
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2), range(2))
    path = tmp_path / "big.mbundle"
    bundle.save(model, path, sample_input=SAMPLE, optimizer=opt)
    with zipfile.ZipFile(path) as z:
        manifest = Manifest.from_bytes(z.read("manifest.json"))
    state = next(f for f in manifest.files if f.path == training.STATE_TENSORS)
    assert state.shards, "the test needs a sharded training entry"
    torch.manual_seed(7)
    other = Net(hidden=12288)
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    bundle.restore(path, other, other_opt, allow_unsigned=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    want, got = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert want.keys() == got.keys()
    for i in want:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(want[i][name], got[i][name]), (
                i,
                name,
                want[i][name].dtype,
                got[i][name].dtype,
            )
