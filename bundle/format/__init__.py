"""The bundle file format: the zip container, the manifest and its canonical JSON,
the safetensors weights, the ONNX graph checks, assets and digests.

Everything here reads and writes bytes; nothing here decides whom to trust.
"""
