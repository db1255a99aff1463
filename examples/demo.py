"""End-to-end demo: train -> export signed -> verify -> load in a fresh process -> predict.

Run with ``bash scripts/demo.sh`` (sets up .venv first) or, in an environment
with model-bundle[sklearn] installed, ``python examples/demo.py [OUTDIR]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import bundle


def step(text: str) -> None:
    print(f"\n== {text}")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
    out.mkdir(parents=True, exist_ok=True)

    step("1. train a scikit-learn pipeline on a DataFrame (numeric + string columns)")
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50_000, 15_000, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
        }
    )
    y = ((df["age"] > 40) & (df["city"] != "nice")).astype(int).to_numpy()
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("clf", RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0)),
        ]
    ).fit(df, y)
    print(f"trained {type(model[-1]).__name__}; training accuracy {model.score(df, y):.3f}")

    step("2. make a signing key (ECDSA P-256)")
    key = bundle.generate_key("ecdsa-p256")
    key_path, pub_path = key.save(out / "demo-signer", overwrite=True)
    print(f"key id {key.key_id[:16]}...  ->  {key_path}, {pub_path}")

    step("3. export a signed bundle")
    path = out / "churn.mbundle"
    manifest = bundle.save(
        model,
        path,
        sample_input=df.iloc[:50],
        signing_key=key_path,
        name="churn-demo",
        version="1.0.0",
        description="demo: RandomForest over a ColumnTransformer",
    )
    for o in manifest.parity.outputs:  # type: ignore[union-attr]
        print(f"parity {o.name}: max abs deviation {o.max_abs:.2e}, {o.mismatches} mismatches")
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")

    step("4. verify it with the CLI (as a stranger would, knowing only the public key)")
    subprocess.run(
        [sys.executable, "-m", "bundle", "verify", str(path), "--trusted-key", str(pub_path)],
        check=True,
    )

    step("5. load + predict in a fresh process that never imports scikit-learn or pickle-loads")
    new = df.sample(8, random_state=1)
    new.to_json(out / "new.json", orient="records")
    child = textwrap.dedent(f"""
        import json, sys
        import bundle
        m = bundle.load({str(path)!r}, trusted_keys={str(pub_path)!r})
        rows = json.load(open({str(out / "new.json")!r}))
        data = {{k: [r[k] for r in rows] for k in rows[0]}}
        pred = m.predict(data).tolist()
        banned = [x for x in ("sklearn", "skl2onnx", "torch", "tensorflow", "joblib")
                  if x in sys.modules]
        print(json.dumps({{"pred": pred, "providers": m.providers, "banned": banned,
                          "signers": m.signers}}))
    """)
    res = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, text=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    want = model.predict(new).tolist()
    print(
        f"providers {got['providers']}, signed by {got['signers'][0][:16]}..., "
        f"frameworks imported: {got['banned'] or 'none'}"
    )
    print(f"bundle predictions  {got['pred']}")
    print(f"original predictions {want}")
    if got["pred"] != want or got["banned"]:
        print("MISMATCH", file=sys.stderr)
        return 1

    step("6. a tampered copy is refused")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    bad = out / "tampered.mbundle"
    bad.write_bytes(bytes(data))
    try:
        bundle.verify(bad, trusted_keys=pub_path)
    except bundle.BundleError as e:
        print(f"refused: {e.one_line()}")
    else:
        print("tampered bundle verified?!", file=sys.stderr)
        return 1
    print("\ndemo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
