"""The index store a service uses, picked by ``settings.index_backend`` (docs/milvus.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vireid.api.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from vireid.index import IndexBackend

__all__ = ["open_index_store"]


def open_index_store(settings: Settings, sessions: sessionmaker[Session]) -> IndexBackend:
    """FAISS files under ``<data_dir>/indexes`` (``index_backend="faiss"``), or Milvus collections at
    ``settings.resolved_milvus_uri`` (``"milvus"``).

    Raises:
        ImportError: ``milvus`` chosen without pymilvus (or milvus-lite for a file); the message names
            the ``milvus`` extra.
        ValueError: a bad FAISS factory or Milvus URI, or ``index_device="cuda"`` without a GPU FAISS.
    """
    if settings.index_backend == "milvus":
        from vireid.index import MilvusIndexStore

        token = settings.milvus_token.get_secret_value() if settings.milvus_token is not None else None
        return MilvusIndexStore(
            settings.resolved_milvus_uri,
            sessions=sessions,
            token=token,
            prefix=settings.milvus_collection_prefix,
            index_type=settings.milvus_index_type,
            index_params=settings.milvus_index_params,
            search_params=settings.milvus_search_params,
        )
    from vireid.index import IndexStore, resolve_index_device

    return IndexStore(
        settings.data_dir,
        factory=settings.index_factory,
        nprobe=settings.index_nprobe,
        ef_search=settings.index_ef_search,
        k_factor=settings.index_k_factor,
        retrain_factor=settings.index_retrain_factor,
        max_train_bytes=settings.index_train_max_mib << 20,
        gpu_device=resolve_index_device(settings.index_device, gpu_id=settings.cuda_device_id),
    )
