"""Gallery index: FAISS vector indexes and SQL metadata (architecture.md contract 5).

Imports only numpy, faiss, sqlalchemy and alembic: never torch or another vireid package. The Milvus
backend (``MilvusIndexStore``) imports pymilvus only when it connects (the ``milvus`` extra).
"""

from vireid.index._backend import FilteringIndex, IndexBackend, StoreIndex
from vireid.index._crops import CROPS_DIRNAME, CropStore, sniff_media_type
from vireid.index._db import (
    DATABASE_FILENAME,
    alembic_config,
    default_database_url,
    downgrade_database,
    make_engine,
    make_sessionmaker,
    normalize_url,
    upgrade_database,
)
from vireid.index._faiss_index import DEFAULT_FACTORY, FaissGalleryIndex
from vireid.index._gpu import gpu_count, resolve_index_device
from vireid.index._manifest import MANIFEST_FORMAT_VERSION, IndexManifest
from vireid.index._milvus_index import (
    MILVUS_EXTRA,
    MetadataFilter,
    MilvusGalleryIndex,
    check_milvus_uri,
)
from vireid.index._milvus_index import collection_name as milvus_collection_name
from vireid.index._milvus_index import connect as milvus_connect
from vireid.index._milvus_store import MilvusIndexStore, MilvusSharedIndex
from vireid.index._models import (
    Base,
    Embedding,
    GalleryItem,
    ModelVersion,
    UTCDateTime,
    decode_vector,
    encode_vector,
)
from vireid.index._numpy_index import NumpyGalleryIndex
from vireid.index._protocol import CorruptIndexError, GalleryIndex
from vireid.index._registry import GalleryKey, ModelRegistry, ReindexSource
from vireid.index._repository import DuplicateItemError, GalleryRepository, NewItem
from vireid.index._store import INDEXES_DIRNAME, IndexStore, SharedIndex
from vireid.index._validation import METRICS, MODALITIES, ids_digest

__all__ = [
    "CROPS_DIRNAME",
    "DATABASE_FILENAME",
    "DEFAULT_FACTORY",
    "INDEXES_DIRNAME",
    "MANIFEST_FORMAT_VERSION",
    "METRICS",
    "MILVUS_EXTRA",
    "MODALITIES",
    "Base",
    "CorruptIndexError",
    "CropStore",
    "DuplicateItemError",
    "Embedding",
    "FaissGalleryIndex",
    "FilteringIndex",
    "GalleryIndex",
    "GalleryItem",
    "GalleryKey",
    "GalleryRepository",
    "IndexBackend",
    "IndexManifest",
    "IndexStore",
    "MetadataFilter",
    "MilvusGalleryIndex",
    "MilvusIndexStore",
    "MilvusSharedIndex",
    "ModelRegistry",
    "ModelVersion",
    "NewItem",
    "NumpyGalleryIndex",
    "ReindexSource",
    "SharedIndex",
    "StoreIndex",
    "UTCDateTime",
    "alembic_config",
    "check_milvus_uri",
    "decode_vector",
    "default_database_url",
    "downgrade_database",
    "encode_vector",
    "gpu_count",
    "ids_digest",
    "make_engine",
    "make_sessionmaker",
    "milvus_collection_name",
    "milvus_connect",
    "normalize_url",
    "resolve_index_device",
    "sniff_media_type",
    "upgrade_database",
]
