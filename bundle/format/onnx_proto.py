"""onnx's protobuf messages (ModelProto, TensorProto, ...) without importing onnx.

``import onnx`` costs a fresh process ~40-60 ms (its C++ extension, helper modules,
numpy glue) -- as much as the rest of a small bundle's load. The loader needs only
the message classes to parse and check the graph, so this module builds them from
onnx's own schema (``onnx/onnx-ml.proto``, the file descriptor onnx's generated
``onnx_ml_pb2`` registers), in a private descriptor pool, with the protobuf runtime
alone. No generated code is vendored, so no protoc/runtime version pairing applies
(a serialized FileDescriptorProto is stable protobuf wire format), and the private
pool never collides with onnx's own registration when onnx is imported too.

The classes are not onnx's: an API of onnx that checks ``isinstance(m, onnx.ModelProto)``
needs ``onnx.ModelProto.FromString(m.SerializeToString())``. Fields a newer onnx adds
are unknown to this schema; :func:`bundle.format.graph.parse_model` refuses a graph
that holds any (what is not known cannot be checked).

Derived from onnx/onnx-ml.proto of onnx 1.23.2, Copyright (c) ONNX Project
Contributors, Apache License 2.0 (as this project). Regenerate after upgrading onnx
(tests/format/test_onnx_proto.py says when) with::

    python -c "import base64, onnx.onnx_ml_pb2 as p; \\
        print(base64.b64encode(p.DESCRIPTOR.serialized_pb).decode())"
"""

from __future__ import annotations

import base64
import functools
from typing import Any

__all__ = ["ONNX_VERSION", "SCHEMA", "message_class"]

ONNX_VERSION = "1.23.2"
"""The onnx release whose schema this is."""

SCHEMA = base64.b64decode(
    "ChJvbm54L29ubngtbWwucHJvdG8SBG9ubngi2wUKDkF0dHJpYnV0ZVByb3RvEgwKBG5hbWUYASABKAkSFQoNcmVmX2F0"
    "dHJfbmFtZRgVIAEoCRISCgpkb2Nfc3RyaW5nGA0gASgJEjAKBHR5cGUYFCABKA4yIi5vbm54LkF0dHJpYnV0ZVByb3Rv"
    "LkF0dHJpYnV0ZVR5cGUSCQoBZhgCIAEoAhIJCgFpGAMgASgDEgkKAXMYBCABKAwSHAoBdBgFIAEoCzIRLm9ubnguVGVu"
    "c29yUHJvdG8SGwoBZxgGIAEoCzIQLm9ubnguR3JhcGhQcm90bxIuCg1zcGFyc2VfdGVuc29yGBYgASgLMhcub25ueC5T"
    "cGFyc2VUZW5zb3JQcm90bxIbCgJ0cBgOIAEoCzIPLm9ubnguVHlwZVByb3RvEg4KBmZsb2F0cxgHIAMoAhIMCgRpbnRz"
    "GAggAygDEg8KB3N0cmluZ3MYCSADKAwSIgoHdGVuc29ycxgKIAMoCzIRLm9ubnguVGVuc29yUHJvdG8SIAoGZ3JhcGhz"
    "GAsgAygLMhAub25ueC5HcmFwaFByb3RvEi8KDnNwYXJzZV90ZW5zb3JzGBcgAygLMhcub25ueC5TcGFyc2VUZW5zb3JQ"
    "cm90bxIkCgt0eXBlX3Byb3RvcxgPIAMoCzIPLm9ubnguVHlwZVByb3RvItkBCg1BdHRyaWJ1dGVUeXBlEg0KCVVOREVG"
    "SU5FRBAAEgkKBUZMT0FUEAESBwoDSU5UEAISCgoGU1RSSU5HEAMSCgoGVEVOU09SEAQSCQoFR1JBUEgQBRIRCg1TUEFS"
    "U0VfVEVOU09SEAsSDgoKVFlQRV9QUk9UTxANEgoKBkZMT0FUUxAGEggKBElOVFMQBxILCgdTVFJJTkdTEAgSCwoHVEVO"
    "U09SUxAJEgoKBkdSQVBIUxAKEhIKDlNQQVJTRV9URU5TT1JTEAwSDwoLVFlQRV9QUk9UT1MQDkoECAwQDUoECBAQFFIB"
    "diKHAQoOVmFsdWVJbmZvUHJvdG8SDAoEbmFtZRgBIAEoCRIdCgR0eXBlGAIgASgLMg8ub25ueC5UeXBlUHJvdG8SEgoK"
    "ZG9jX3N0cmluZxgDIAEoCRI0Cg5tZXRhZGF0YV9wcm9wcxgEIAMoCzIcLm9ubnguU3RyaW5nU3RyaW5nRW50cnlQcm90"
    "byKhAgoJTm9kZVByb3RvEg0KBWlucHV0GAEgAygJEg4KBm91dHB1dBgCIAMoCRIMCgRuYW1lGAMgASgJEg8KB29wX3R5"
    "cGUYBCABKAkSDgoGZG9tYWluGAcgASgJEhAKCG92ZXJsb2FkGAggASgJEicKCWF0dHJpYnV0ZRgFIAMoCzIULm9ubngu"
    "QXR0cmlidXRlUHJvdG8SEgoKZG9jX3N0cmluZxgGIAEoCRI0Cg5tZXRhZGF0YV9wcm9wcxgJIAMoCzIcLm9ubnguU3Ry"
    "aW5nU3RyaW5nRW50cnlQcm90bxJBChVkZXZpY2VfY29uZmlndXJhdGlvbnMYCiADKAsyIi5vbm54Lk5vZGVEZXZpY2VD"
    "b25maWd1cmF0aW9uUHJvdG8iMgoUSW50SW50TGlzdEVudHJ5UHJvdG8SCwoDa2V5GAEgASgDEg0KBXZhbHVlGAIgAygD"
    "IoABChxOb2RlRGV2aWNlQ29uZmlndXJhdGlvblByb3RvEhgKEGNvbmZpZ3VyYXRpb25faWQYASABKAkSLgoNc2hhcmRp"
    "bmdfc3BlYxgCIAMoCzIXLm9ubnguU2hhcmRpbmdTcGVjUHJvdG8SFgoOcGlwZWxpbmVfc3RhZ2UYAyABKAUiowEKEVNo"
    "YXJkaW5nU3BlY1Byb3RvEhMKC3RlbnNvcl9uYW1lGAEgASgJEg4KBmRldmljZRgCIAMoAxI9ChlpbmRleF90b19kZXZp"
    "Y2VfZ3JvdXBfbWFwGAMgAygLMhoub25ueC5JbnRJbnRMaXN0RW50cnlQcm90bxIqCgtzaGFyZGVkX2RpbRgEIAMoCzIV"
    "Lm9ubnguU2hhcmRlZERpbVByb3RvIlUKD1NoYXJkZWREaW1Qcm90bxIMCgRheGlzGAEgASgDEjQKD3NpbXBsZV9zaGFy"
    "ZGluZxgCIAMoCzIbLm9ubnguU2ltcGxlU2hhcmRlZERpbVByb3RvIlwKFVNpbXBsZVNoYXJkZWREaW1Qcm90bxITCglk"
    "aW1fdmFsdWUYASABKANIABITCglkaW1fcGFyYW0YAiABKAlIABISCgpudW1fc2hhcmRzGAMgASgDQgUKA2RpbSLWAQoR"
    "VHJhaW5pbmdJbmZvUHJvdG8SKAoOaW5pdGlhbGl6YXRpb24YASABKAsyEC5vbm54LkdyYXBoUHJvdG8SIwoJYWxnb3Jp"
    "dGhtGAIgASgLMhAub25ueC5HcmFwaFByb3RvEjwKFmluaXRpYWxpemF0aW9uX2JpbmRpbmcYAyADKAsyHC5vbm54LlN0"
    "cmluZ1N0cmluZ0VudHJ5UHJvdG8SNAoOdXBkYXRlX2JpbmRpbmcYBCADKAsyHC5vbm54LlN0cmluZ1N0cmluZ0VudHJ5"
    "UHJvdG8iogMKCk1vZGVsUHJvdG8SEgoKaXJfdmVyc2lvbhgBIAEoAxIuCgxvcHNldF9pbXBvcnQYCCADKAsyGC5vbm54"
    "Lk9wZXJhdG9yU2V0SWRQcm90bxIVCg1wcm9kdWNlcl9uYW1lGAIgASgJEhgKEHByb2R1Y2VyX3ZlcnNpb24YAyABKAkS"
    "DgoGZG9tYWluGAQgASgJEhUKDW1vZGVsX3ZlcnNpb24YBSABKAMSEgoKZG9jX3N0cmluZxgGIAEoCRIfCgVncmFwaBgH"
    "IAEoCzIQLm9ubnguR3JhcGhQcm90bxI0Cg5tZXRhZGF0YV9wcm9wcxgOIAMoCzIcLm9ubnguU3RyaW5nU3RyaW5nRW50"
    "cnlQcm90bxIuCg10cmFpbmluZ19pbmZvGBQgAygLMhcub25ueC5UcmFpbmluZ0luZm9Qcm90bxImCglmdW5jdGlvbnMY"
    "GSADKAsyEy5vbm54LkZ1bmN0aW9uUHJvdG8SNQoNY29uZmlndXJhdGlvbhgaIAMoCzIeLm9ubnguRGV2aWNlQ29uZmln"
    "dXJhdGlvblByb3RvIk0KGERldmljZUNvbmZpZ3VyYXRpb25Qcm90bxIMCgRuYW1lGAEgASgJEhMKC251bV9kZXZpY2Vz"
    "GAIgASgFEg4KBmRldmljZRgDIAMoCSI0ChZTdHJpbmdTdHJpbmdFbnRyeVByb3RvEgsKA2tleRgBIAEoCRINCgV2YWx1"
    "ZRgCIAEoCSJrChBUZW5zb3JBbm5vdGF0aW9uEhMKC3RlbnNvcl9uYW1lGAEgASgJEkIKHHF1YW50X3BhcmFtZXRlcl90"
    "ZW5zb3JfbmFtZXMYAiADKAsyHC5vbm54LlN0cmluZ1N0cmluZ0VudHJ5UHJvdG8i1AMKCkdyYXBoUHJvdG8SHQoEbm9k"
    "ZRgBIAMoCzIPLm9ubnguTm9kZVByb3RvEgwKBG5hbWUYAiABKAkSJgoLaW5pdGlhbGl6ZXIYBSADKAsyES5vbm54LlRl"
    "bnNvclByb3RvEjMKEnNwYXJzZV9pbml0aWFsaXplchgPIAMoCzIXLm9ubnguU3BhcnNlVGVuc29yUHJvdG8SEgoKZG9j"
    "X3N0cmluZxgKIAEoCRIjCgVpbnB1dBgLIAMoCzIULm9ubnguVmFsdWVJbmZvUHJvdG8SJAoGb3V0cHV0GAwgAygLMhQu"
    "b25ueC5WYWx1ZUluZm9Qcm90bxIoCgp2YWx1ZV9pbmZvGA0gAygLMhQub25ueC5WYWx1ZUluZm9Qcm90bxI3ChdxdWFu"
    "dGl6YXRpb25fYW5ub3RhdGlvbhgOIAMoCzIWLm9ubnguVGVuc29yQW5ub3RhdGlvbhI0Cg5tZXRhZGF0YV9wcm9wcxgQ"
    "IAMoCzIcLm9ubnguU3RyaW5nU3RyaW5nRW50cnlQcm90b0oECAMQBEoECAQQBUoECAYQClIKaXJfdmVyc2lvblIQcHJv"
    "ZHVjZXJfdmVyc2lvblIMcHJvZHVjZXJfdGFnUgZkb21haW4iogcKC1RlbnNvclByb3RvEgwKBGRpbXMYASADKAMSEQoJ"
    "ZGF0YV90eXBlGAIgASgFEioKB3NlZ21lbnQYAyABKAsyGS5vbm54LlRlbnNvclByb3RvLlNlZ21lbnQSFgoKZmxvYXRf"
    "ZGF0YRgEIAMoAkICEAESFgoKaW50MzJfZGF0YRgFIAMoBUICEAESEwoLc3RyaW5nX2RhdGEYBiADKAwSFgoKaW50NjRf"
    "ZGF0YRgHIAMoA0ICEAESDAoEbmFtZRgIIAEoCRISCgpkb2Nfc3RyaW5nGAwgASgJEhAKCHJhd19kYXRhGAkgASgMEjMK"
    "DWV4dGVybmFsX2RhdGEYDSADKAsyHC5vbm54LlN0cmluZ1N0cmluZ0VudHJ5UHJvdG8SNQoNZGF0YV9sb2NhdGlvbhgO"
    "IAEoDjIeLm9ubnguVGVuc29yUHJvdG8uRGF0YUxvY2F0aW9uEhcKC2RvdWJsZV9kYXRhGAogAygBQgIQARIXCgt1aW50"
    "NjRfZGF0YRgLIAMoBEICEAESNAoObWV0YWRhdGFfcHJvcHMYECADKAsyHC5vbm54LlN0cmluZ1N0cmluZ0VudHJ5UHJv"
    "dG8aJQoHU2VnbWVudBINCgViZWdpbhgBIAEoAxILCgNlbmQYAiABKAMijgMKCERhdGFUeXBlEg0KCVVOREVGSU5FRBAA"
    "EgkKBUZMT0FUEAESCQoFVUlOVDgQAhIICgRJTlQ4EAMSCgoGVUlOVDE2EAQSCQoFSU5UMTYQBRIJCgVJTlQzMhAGEgkK"
    "BUlOVDY0EAcSCgoGU1RSSU5HEAgSCAoEQk9PTBAJEgsKB0ZMT0FUMTYQChIKCgZET1VCTEUQCxIKCgZVSU5UMzIQDBIK"
    "CgZVSU5UNjQQDRINCglDT01QTEVYNjQQDhIOCgpDT01QTEVYMTI4EA8SDAoIQkZMT0FUMTYQEBIQCgxGTE9BVDhFNE0z"
    "Rk4QERISCg5GTE9BVDhFNE0zRk5VWhASEg4KCkZMT0FUOEU1TTIQExISCg5GTE9BVDhFNU0yRk5VWhAUEgkKBVVJTlQ0"
    "EBUSCAoESU5UNBAWEg4KCkZMT0FUNEUyTTEQFxIOCgpGTE9BVDhFOE0wEBgSCQoFVUlOVDIQGRIICgRJTlQyEBoSDgoK"
    "RkxPQVQ2RTJNMxAbEg4KCkZMT0FUNkUzTTIQHCIpCgxEYXRhTG9jYXRpb24SCwoHREVGQVVMVBAAEgwKCEVYVEVSTkFM"
    "EAEiaAoRU3BhcnNlVGVuc29yUHJvdG8SIQoGdmFsdWVzGAEgASgLMhEub25ueC5UZW5zb3JQcm90bxIiCgdpbmRpY2Vz"
    "GAIgASgLMhEub25ueC5UZW5zb3JQcm90bxIMCgRkaW1zGAMgAygDIpUBChBUZW5zb3JTaGFwZVByb3RvEi0KA2RpbRgB"
    "IAMoCzIgLm9ubnguVGVuc29yU2hhcGVQcm90by5EaW1lbnNpb24aUgoJRGltZW5zaW9uEhMKCWRpbV92YWx1ZRgBIAEo"
    "A0gAEhMKCWRpbV9wYXJhbRgCIAEoCUgAEhIKCmRlbm90YXRpb24YAyABKAlCBwoFdmFsdWUitwUKCVR5cGVQcm90bxIt"
    "Cgt0ZW5zb3JfdHlwZRgBIAEoCzIWLm9ubnguVHlwZVByb3RvLlRlbnNvckgAEjEKDXNlcXVlbmNlX3R5cGUYBCABKAsy"
    "GC5vbm54LlR5cGVQcm90by5TZXF1ZW5jZUgAEicKCG1hcF90eXBlGAUgASgLMhMub25ueC5UeXBlUHJvdG8uTWFwSAAS"
    "MQoNb3B0aW9uYWxfdHlwZRgJIAEoCzIYLm9ubnguVHlwZVByb3RvLk9wdGlvbmFsSAASOgoSc3BhcnNlX3RlbnNvcl90"
    "eXBlGAggASgLMhwub25ueC5UeXBlUHJvdG8uU3BhcnNlVGVuc29ySAASLQoLb3BhcXVlX3R5cGUYByABKAsyFi5vbm54"
    "LlR5cGVQcm90by5PcGFxdWVIABISCgpkZW5vdGF0aW9uGAYgASgJGkIKBlRlbnNvchIRCgllbGVtX3R5cGUYASABKAUS"
    "JQoFc2hhcGUYAiABKAsyFi5vbm54LlRlbnNvclNoYXBlUHJvdG8aLgoIU2VxdWVuY2USIgoJZWxlbV90eXBlGAEgASgL"
    "Mg8ub25ueC5UeXBlUHJvdG8aPAoDTWFwEhAKCGtleV90eXBlGAEgASgFEiMKCnZhbHVlX3R5cGUYAiABKAsyDy5vbm54"
    "LlR5cGVQcm90bxouCghPcHRpb25hbBIiCgllbGVtX3R5cGUYASABKAsyDy5vbm54LlR5cGVQcm90bxpICgxTcGFyc2VU"
    "ZW5zb3ISEQoJZWxlbV90eXBlGAEgASgFEiUKBXNoYXBlGAIgASgLMhYub25ueC5UZW5zb3JTaGFwZVByb3RvGjgKBk9w"
    "YXF1ZRIOCgZkb21haW4YASABKAkSDAoEbmFtZRgCIAEoCUoECAMQBFIKcGFyYW1ldGVyc0IHCgV2YWx1ZSI1ChJPcGVy"
    "YXRvclNldElkUHJvdG8SDgoGZG9tYWluGAEgASgJEg8KB3ZlcnNpb24YAiABKAMihgMKDUZ1bmN0aW9uUHJvdG8SDAoE"
    "bmFtZRgBIAEoCRINCgVpbnB1dBgEIAMoCRIOCgZvdXRwdXQYBSADKAkSEQoJYXR0cmlidXRlGAYgAygJEi0KD2F0dHJp"
    "YnV0ZV9wcm90bxgLIAMoCzIULm9ubnguQXR0cmlidXRlUHJvdG8SHQoEbm9kZRgHIAMoCzIPLm9ubnguTm9kZVByb3Rv"
    "EhIKCmRvY19zdHJpbmcYCCABKAkSLgoMb3BzZXRfaW1wb3J0GAkgAygLMhgub25ueC5PcGVyYXRvclNldElkUHJvdG8S"
    "DgoGZG9tYWluGAogASgJEhAKCG92ZXJsb2FkGA0gASgJEigKCnZhbHVlX2luZm8YDCADKAsyFC5vbm54LlZhbHVlSW5m"
    "b1Byb3RvEjQKDm1ldGFkYXRhX3Byb3BzGA4gAygLMhwub25ueC5TdHJpbmdTdHJpbmdFbnRyeVByb3RvSgQIAhADSgQI"
    "AxAEUg1zaW5jZV92ZXJzaW9uUgZzdGF0dXMqggMKB1ZlcnNpb24SEgoOX1NUQVJUX1ZFUlNJT04QABIZChVJUl9WRVJT"
    "SU9OXzIwMTdfMTBfMTAQARIZChVJUl9WRVJTSU9OXzIwMTdfMTBfMzAQAhIYChRJUl9WRVJTSU9OXzIwMTdfMTFfMxAD"
    "EhgKFElSX1ZFUlNJT05fMjAxOV8xXzIyEAQSGAoUSVJfVkVSU0lPTl8yMDE5XzNfMTgQBRIYChRJUl9WRVJTSU9OXzIw"
    "MTlfOV8xORAGEhcKE0lSX1ZFUlNJT05fMjAyMF81XzgQBxIYChRJUl9WRVJTSU9OXzIwMjFfN18zMBAIEhcKE0lSX1ZF"
    "UlNJT05fMjAyM181XzUQCRIYChRJUl9WRVJTSU9OXzIwMjRfM18yNRAKEhkKFUlSX1ZFUlNJT05fMjAyNV8wNV8xMhAL"
    "EhkKFUlSX1ZFUlNJT05fMjAyNV8wOF8yNhAMEhkKFUlSX1ZFUlNJT05fMjAyNV8xMV8wNhANEg4KCklSX1ZFUlNJT04Q"
    "DiouCg5PcGVyYXRvclN0YXR1cxIQCgxFWFBFUklNRU5UQUwQABIKCgZTVEFCTEUQAUICSAM="
)
"""Serialized FileDescriptorProto of onnx/onnx-ml.proto (package ``onnx``)."""


@functools.cache
def _pool() -> Any:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(SCHEMA)
    return pool


@functools.cache
def message_class(name: str) -> Any:
    """The message class of ``onnx.<name>`` (``"ModelProto"``, ``"TensorProto"``, ...)."""
    from google.protobuf import message_factory

    desc = _pool().FindMessageTypeByName(f"onnx.{name}")
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:  # protobuf >= 4.22
        return get(desc)
    return message_factory.MessageFactory(_pool()).GetPrototype(desc)  # pragma: no cover
