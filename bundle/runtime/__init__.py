"""Running a verified bundle: onnxruntime sessions and devices, and ``Model``."""
