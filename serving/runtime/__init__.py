"""Runtime embedders for exported models: no torch on this path (architecture.md Contract 4).

Reads ``manifest.json`` (Contract 3), decodes uploads safely, preprocesses in NumPy exactly like
the training evaluation transform (Contract 2) and runs ONNX Runtime or TensorRT.
"""

from vireid.serving.runtime._decode import (
    ALLOWED_FORMATS,
    ImageDecodeError,
    UnsupportedImageType,
    decode_image,
    read_image_size,
)
from vireid.serving.runtime._embedder import (
    DEVICES,
    BackendUnavailableError,
    BatchedEmbedder,
    Embedder,
    OnnxEmbedder,
    flip_average,
    l2_normalize,
    onnx_providers,
    resolve_session_device,
    select_providers,
)
from vireid.serving.runtime._gpu_options import CUDNN_CONV_ALGO_SEARCH, GpuOptions, cuda_provider_options
from vireid.serving.runtime._load import BACKENDS, load_embedder, tensorrt_options
from vireid.serving.runtime._manifest import (
    FORMAT_VERSION,
    INTERPOLATIONS,
    MANIFEST_FILENAME,
    MODALITIES,
    PRECISIONS,
    InputSpec,
    Manifest,
)
from vireid.serving.runtime._preprocess import ImageInput, preprocess, preprocess_batch, to_rgb_image
from vireid.serving.runtime._tensorrt import TensorRTEmbedder

__all__ = [
    "ALLOWED_FORMATS",
    "BACKENDS",
    "CUDNN_CONV_ALGO_SEARCH",
    "DEVICES",
    "FORMAT_VERSION",
    "INTERPOLATIONS",
    "MANIFEST_FILENAME",
    "MODALITIES",
    "PRECISIONS",
    "BackendUnavailableError",
    "BatchedEmbedder",
    "Embedder",
    "GpuOptions",
    "ImageDecodeError",
    "ImageInput",
    "InputSpec",
    "Manifest",
    "OnnxEmbedder",
    "TensorRTEmbedder",
    "UnsupportedImageType",
    "cuda_provider_options",
    "decode_image",
    "flip_average",
    "l2_normalize",
    "load_embedder",
    "onnx_providers",
    "preprocess",
    "preprocess_batch",
    "read_image_size",
    "resolve_session_device",
    "select_providers",
    "tensorrt_options",
    "to_rgb_image",
]
