"""Training state streams like the weights: captured as views, written from them.

Parameters and optimizer state are referenced, not copied, when captured (their
version counters catch a change before they are written); ``state.safetensors`` is
laid out exactly as ``safetensors.torch.save`` would lay it out, and written one
tensor at a time from the tensors' own memory.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
import torch
from torch import nn

from bundle.training import torch as training


def _bytes(tensor_file: object) -> bytes:
    return b"".join(bytes(c) for c in tensor_file.chunks())  # type: ignore[attr-defined]


def test_state_file_is_safetensors_own_layout_for_every_dtype() -> None:
    from safetensors.torch import save

    torch.manual_seed(0)
    tensors = {
        "w": torch.randn(3, 5),
        "half": torch.randn(4).half(),
        "bf": torch.randn(2, 2).bfloat16(),
        "step": torch.tensor(7.0),  # 0-d, as optimizers keep their step
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "d": torch.randn(2, dtype=torch.float64),
    }
    streamed = training._tensor_file(tensors)
    assert _bytes(streamed) == save(tensors)
    assert streamed.size == len(save(tensors))


def test_capture_views_parameters_and_optimizer_state_and_copies_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(6, 4)).sum().backward()
    opt.step()
    state = training.capture(model, opt)
    for name, p in model.named_parameters():
        assert state.model[name].data_ptr() == p.data_ptr(), name
    for name, b in model.named_buffers():
        assert state.model[name].data_ptr() != b.data_ptr(), name  # forward may update it
        assert torch.equal(state.model[name], b)
    moments = {t.data_ptr() for s in opt.state.values() for t in s.values() if t.dim()}
    assert moments <= {t.data_ptr() for t in state.tensors.values()}

    # The state entries reference those same bytes: nothing was copied to write them.
    entries = dict(state.entries({}))
    streamed = entries[training.STATE_TENSORS]
    from safetensors.torch import load

    saved = load(_bytes(streamed))
    for name, p in model.named_parameters():
        assert torch.equal(saved[f"model/{name}"], p.detach()), name


def test_buffers_changed_after_capture_keep_their_captured_value() -> None:
    model = nn.BatchNorm1d(3)
    state = training.capture(model)
    assert model.running_mean is not None
    with torch.no_grad():
        model.running_mean.add_(5.0)
    from safetensors.torch import load

    entries = dict(state.entries({}))
    listed = {t["name"]: t for t in json.loads(entries[training.STATE_JSON])["model"]["tensors"]}
    saved = load(_bytes(entries[training.STATE_TENSORS]))
    assert torch.equal(saved[listed["running_mean"]["key"]], torch.zeros(3))
