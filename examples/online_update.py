"""Online update through a model store, every step verified:

restore the model that ``production`` names -> train it on new data -> save the next
version -> push -> promote to ``staging`` -> check it -> promote to ``production``
-> roll back. Each load, restore and resolve checks the bundle's signature and every
byte, and the signed alias records (chain, signatures, client state).

Run, in an environment with model-bundle[torch,store] installed::

    python examples/online_update.py [OUTDIR] [STORE_URL]

STORE_URL defaults to a folder under OUTDIR; an ``s3://bucket/prefix`` works the
same (credentials and endpoint from the usual AWS environment variables).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import bundle


def step(text: str) -> None:
    print(f"\n== {text}")


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def batch(day: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Each day's data: the relation drifts a little (what online updates are for)."""
    g = torch.Generator().manual_seed(day)
    x = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5 + 0.1 * day]])
    return x, x @ w + 0.05 * torch.randn(n, 1, generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, day: int, steps: int = 60) -> float:
    x, y = batch(day)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return float(loss.detach())


def mse(model: bundle.Model, day: int) -> float:
    x, y = batch(day)
    got = model.run({model.inputs[0].name: x.numpy()})
    return float(np.mean((next(iter(got.values())) - y.numpy()) ** 2))


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "online-update-out")
    out.mkdir(parents=True, exist_ok=True)
    url = sys.argv[2] if len(sys.argv) > 2 else str(out / "store")
    key = bundle.generate_key()
    trust = bundle.TrustPolicy(keys=key.public_key)
    store = bundle.Store(url, trust=trust, state=out / "store-state.json", cache_dir=out / "cache")
    x0, _ = batch(0)

    step("0. day 0: train v1, push it, make it production")
    torch.manual_seed(0)
    model = Regressor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    print(f"v1 loss {train(model, opt, 0):.4f}")
    bundle.save(
        model,
        out / "v1.mbundle",
        sample_input=x0[:4],
        signing_key=key,
        name="regressor",
        version="1",
        optimizer=opt,
    )
    v1 = store.push(out / "v1.mbundle")
    store.promote("regressor", "production", v1.version, signing_key=key, reason="first")

    step("1. restore what production names (verified), train on day 1's data")
    current = store.resolve("regressor@production")
    print(
        f"production -> v{current.version} sha256:{current.digest[:16]}... "
        f"(record {current.record.seq if current.record else '-'})"
    )
    model = Regressor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    path = store.pull("regressor@production")  # fetched into the cache, digest checked
    bundle.restore(path, model, opt, trust=trust)  # signature + every byte, then the state
    print(f"v2 loss on day 1 {train(model, opt, 1):.4f}")

    step("2. save the next version and push it (the store verifies it first)")
    bundle.save(
        model,
        out / "v2.mbundle",
        sample_input=x0[:4],
        signing_key=key,
        name="regressor",
        version="2",
        optimizer=opt,
    )
    v2 = store.push(out / "v2.mbundle")
    print(f"stored regressor:{v2.version} as sha256:{v2.digest[:16]}...")

    step("3. promote to staging, check it there, then to production")
    store.promote("regressor", "staging", "2", signing_key=key, reason="day 1 retrain")
    staged = store.load("regressor@staging")
    old = store.load("regressor:1")
    print(f"day-1 MSE: v1 {mse(old, 1):.4f}, v2 (staging) {mse(staged, 1):.4f}")
    store.promote("regressor", "production", "2", signing_key=key, reason="better on day 1")
    assert store.load("regressor@production").manifest.model.version == "2"

    step("4. something is wrong after all: roll production back")
    back = store.rollback("regressor", "production", signing_key=key, reason="incident 42")
    live = store.load("regressor@production")
    print(
        f"production -> v{back.target.version} (record {back.seq}); loaded "
        f"v{live.manifest.model.version}"
    )

    step("5. the signed history of production")
    for r in store.history("regressor", "production"):
        print(f"  {r.seq} {r.action:8} v{r.target.version} {r.reason!r} by {r.signers[0][:16]}")
    ok = live.manifest.model.version == "1"
    print("\nevery step verified" if ok else "\nUNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
