"""PyTorch demo: train -> save signed (with optimizer) -> verify -> predict without torch
-> restore into fresh objects and keep training.

Run, in an environment with model-bundle[torch] installed::

    python examples/torch_demo.py [OUTDIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import nn

import bundle


def step(text: str) -> None:
    print(f"\n== {text}")


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def fresh() -> tuple[MLP, torch.optim.Optimizer]:
    model = MLP()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> float:
    x, y = data()
    model.train()
    loss = torch.tensor(0.0)
    for i in range(steps):
        xb, yb = x[i % 8 * 32 : (i % 8 + 1) * 32], y[i % 8 * 32 : (i % 8 + 1) * 32]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return float(loss.detach())


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import bundle
    m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2])
    pred = m.predict(np.load(sys.argv[3]))
    print(json.dumps({"torch_imported": "torch" in sys.modules,
                      "argmax": pred.argmax(1).tolist(), "signers": m.signers}))
""")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "torch-demo-out")
    out.mkdir(parents=True, exist_ok=True)

    step("1. train a tiny MLP for 20 steps")
    torch.manual_seed(0)
    model, opt = fresh()
    print(f"loss after 20 steps: {train(model, opt, 20):.4f}")

    step("2. make a signing key and save a signed bundle with the optimizer state")
    key = bundle.generate_key("ed25519")
    _, pub = key.save(out / "torch-demo", overwrite=True)
    path = out / "mlp.mbundle"
    x, _ = data()
    manifest = bundle.save(
        model,
        path,
        sample_input=x[:8],
        signing_key=key,
        name="mlp-demo",
        optimizer=opt,
        include_rng=True,
    )
    print(
        f"exported with {manifest.model.converter}; inputs "
        f"{[(s.name, s.dtype, list(s.shape)) for s in manifest.inputs]}"
    )
    for f in manifest.files:
        print(f"  {f.path:28} {f.role:15} {f.size:>8} bytes")
    print(
        f"parity on the sample: max abs {manifest.parity.outputs[0].max_abs:.2e}"
        if manifest.parity
        else "no parity"
    )

    step("3. verify: signature, every file's hash, the graph")
    report = bundle.verify(path, trusted_keys=pub)
    print(f"verified={report.verified}; signed by {report.signers[0].key_id[:16]}...")

    step("4. load and predict in a fresh process that never imports torch")
    np.save(out / "x.npy", x[:5].numpy())
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(pub), str(out / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(res.stdout.strip().splitlines()[-1])
    model.train(False)
    with torch.no_grad():
        want = model(x[:5]).argmax(1).tolist()
    print(
        f"child: torch imported = {child['torch_imported']}; predictions {child['argmax']} "
        f"(torch says {want})"
    )
    assert not child["torch_imported"]
    assert child["argmax"] == want

    step("5. restore into fresh objects and continue; compare with never stopping")
    model2, opt2 = fresh()
    bundle.restore(path, model2, opt2, trusted_keys=pub)  # weights, AdamW state and RNG state
    rng = torch.get_rng_state()  # = the saved one: the original continues from it too
    resumed = train(model2, opt2, 20)
    torch.set_rng_state(rng)
    uninterrupted = train(model, opt, 20)
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    print(
        f"loss after 40 steps: resumed {resumed:.6f}, uninterrupted {uninterrupted:.6f}; "
        f"identical parameters: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
