"""The adversarial corpus: files that bundle.verify / bundle.load must refuse (see generate.py)."""
