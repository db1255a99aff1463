"""PyTorch models people have (issue 17): Hugging Face causal LMs with their default
config (KV cache on), BERT with a variable sequence length, ``nn.TransformerEncoder``
with a padding mask. Each is built from a tiny config (nothing downloaded), saved,
loaded, and compared with the original module on inputs of other shapes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("torch")
pytest.importorskip("onnxscript")
import torch

pytestmark = [
    pytest.mark.slow,  # each test exports with torch.export (a few seconds)
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
]


def _transformers() -> Any:
    t: Any = pytest.importorskip("transformers")
    t.logging.set_verbosity_error()
    return t


def test_causal_lm_with_default_config_exports_without_cache(tmp_path: Path) -> None:
    t = _transformers()
    torch.manual_seed(0)
    config = t.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=97,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    assert config.use_cache  # the default people have
    model = t.GPT2LMHeadModel(config).eval()
    manifest = bundle.save(
        model,
        tmp_path / "gpt2.mb",
        sample_input={"input_ids": torch.randint(0, 97, (1, 6))},
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
    )
    assert model.config.use_cache  # put back
    assert [o.name for o in manifest.outputs] == ["logits"]
    m = bundle.load(tmp_path / "gpt2.mb", allow_unsigned=True)
    ids = torch.randint(0, 97, (3, 11))
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits.numpy()
    np.testing.assert_allclose(m.run({"input_ids": ids.numpy()})["logits"], want, atol=1e-4)


def test_llama_from_small_config(tmp_path: Path) -> None:
    t = _transformers()
    torch.manual_seed(0)
    config = t.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=101,
        max_position_embeddings=64,
    )
    model = t.LlamaForCausalLM(config).eval()
    bundle.save(
        model,
        tmp_path / "llama.mb",
        sample_input={"input_ids": torch.randint(0, 101, (2, 7))},
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
    )
    m = bundle.load(tmp_path / "llama.mb", allow_unsigned=True)
    ids = torch.randint(0, 101, (1, 9))
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits.numpy()
    np.testing.assert_allclose(m.run({"input_ids": ids.numpy()})["logits"], want, atol=1e-4)


def _bert() -> Any:
    t = _transformers()
    torch.manual_seed(0)
    return t.BertModel(
        t.BertConfig(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=64,
        )
    ).eval()


def test_bert_variable_length_keeps_torch_reason(tmp_path: Path) -> None:
    model = _bert()
    sample = {
        "input_ids": torch.randint(0, 100, (2, 8)),
        "attention_mask": torch.ones(2, 8, dtype=torch.long),
    }
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with pytest.raises(bundle.ConversionError) as e:
        bundle.save(model, tmp_path / "b.mb", sample_input=sample, dynamic_axes=axes)
    text = str(e.value)
    assert "Constraints violated (seq)" in text
    assert "<= 64" in text  # torch's guard: max_position_embeddings
    assert "('seq', None, 64)" in text  # its suggested fix, in save's terms
    assert list(tmp_path.iterdir()) == []


def test_bert_with_bounded_sequence_axis(tmp_path: Path) -> None:
    model = _bert()
    sample = {
        "input_ids": torch.randint(0, 100, (2, 8)),
        "attention_mask": torch.ones(2, 8, dtype=torch.long),
    }
    axes = {
        "input_ids": {0: "batch", 1: ("seq", None, 64)},
        "attention_mask": {0: "batch", 1: "seq"},
    }
    bundle.save(model, tmp_path / "b.mb", sample_input=sample, dynamic_axes=axes)
    m = bundle.load(tmp_path / "b.mb", allow_unsigned=True)
    ids = torch.randint(0, 100, (3, 13))
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[1, 9:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    got = m.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(got["last_hidden_state"], want, atol=1e-4)


def test_bad_axis_bounds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match=r"\(name, min, max\) with min <= max"):
        bundle.save(
            _bert(),
            tmp_path / "b.mb",
            sample_input={"input_ids": torch.randint(0, 100, (2, 8))},
            dynamic_axes={"input_ids": {1: ("seq", 10, 2)}},
        )


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(
            d_model=16, nhead=2, dim_feedforward=32, batch_first=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enable_nested_tensor with norm_first: irrelevant
            self.enc = torch.nn.TransformerEncoder(layer, num_layers=2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.enc(x, src_key_padding_mask=mask)
        return out


def test_transformer_encoder_with_padding_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Encoder().eval()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3:] = True
    manifest = bundle.save(
        model,
        tmp_path / "enc.mb",
        sample_input=(torch.randn(2, 5, 16), mask),
        dynamic_axes={"x": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}},
    )
    assert manifest.parity is not None
    assert torch.backends.mha.get_fastpath_enabled()  # put back
    m = bundle.load(tmp_path / "enc.mb", allow_unsigned=True)
    x = torch.randn(3, 7, 16)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 4:] = True
    got = m.run({"x": x.numpy(), "mask": mask.numpy()})["output"]
    with torch.no_grad():
        fast = model(x, mask).numpy()  # eval-mode fast path: padded positions are zeros
    keep = ~mask.numpy()
    np.testing.assert_allclose(got[keep], fast[keep], atol=1e-4)
