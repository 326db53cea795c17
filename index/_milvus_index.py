"""Milvus gallery index: one collection per (model version, modality), SQL ids as primary keys.

``pymilvus`` is optional (the ``milvus`` extra) and imported only when a client is made. Collection
schema (docs/milvus.md): ``id`` INT64 primary key (the SQL ``gallery_items.id``), ``vector``
FLOAT_VECTOR of the model's width, ``camera`` VARCHAR(64) and ``captured_at`` INT64 (microseconds
since 1970-01-01 UTC, null when the item has no capture time), so camera and time filters run inside
Milvus as a boolean expression. Search uses metric ``IP`` (cosine on L2-normalised embeddings); the
vector index type defaults to ``FLAT`` (exact). Calls follow the pymilvus ``MilvusClient`` API
(milvus.io/docs: "Manage Collections", "Insert, Upsert & Delete", "Basic Vector Search",
"Filtered Search", "Consistency Level").
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vireid.index._protocol import CorruptIndexError
from vireid.index._validation import as_ids, as_vectors, check_k, check_modality, rank_results

logger = logging.getLogger(__name__)

#: The ``pip install "vireid[milvus]"`` extra that brings pymilvus and milvus-lite.
MILVUS_EXTRA: Final = "milvus"
#: Default collection name prefix (``VIREID_MILVUS_COLLECTION_PREFIX``).
DEFAULT_COLLECTION_PREFIX: Final = "vireid"
#: Default vector index type: exact search.
DEFAULT_MILVUS_INDEX_TYPE: Final = "FLAT"
#: Milvus's default cap on ``limit`` (``topK``) of one search (``quotaAndLimits``: 16384).
MAX_TOPK: Final = 16384
#: Field names of a gallery collection.
ID_FIELD: Final = "id"
VECTOR_FIELD: Final = "vector"
CAMERA_FIELD: Final = "camera"
CAPTURED_AT_FIELD: Final = "captured_at"
#: Longest camera name, as in SQL (``gallery_items.camera`` is VARCHAR(64)).
CAMERA_MAX_LENGTH: Final = 64
# Extra neighbours fetched beyond k so that ties at the cut-off can be ordered by id.
_TIE_MARGIN: Final = 8
# Ids per "id in [...]" expression and rows per insert/upsert call (well below gRPC's 64 MiB message).
_ID_CHUNK: Final = 1000
_WRITE_BATCH: Final = 2048
_ITER_BATCH: Final = 16384
_STRONG: Final = {"consistency_level": "Strong"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PREFIX_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_REMOTE_SCHEMES: Final = ("http://", "https://", "tcp://", "grpc://", "unix:")


def _pymilvus() -> Any:
    """The ``pymilvus`` module.

    Raises:
        ImportError: it is not installed; the message names the extra.
    """
    try:
        import pymilvus
    except ImportError as exc:
        raise ImportError(
            f'the Milvus backend needs pymilvus: pip install "vireid[{MILVUS_EXTRA}]" '
            f"(pymilvus, plus milvus-lite for a local .db file)"
        ) from exc
    return pymilvus


def is_lite_uri(uri: str) -> bool:
    """True when ``uri`` names a Milvus Lite file (a local path) rather than a server."""
    return not uri.startswith(_REMOTE_SCHEMES)


def check_milvus_uri(uri: str) -> str:
    """Return ``uri`` if it is a server URI (``http://host:19530``) or a Milvus Lite ``.db`` path.

    Raises:
        ValueError: an empty URI, or a local path whose name does not end in ``.db`` (pymilvus starts
            Milvus Lite only for such names).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("milvus_uri must be a server URI (http://host:19530) or a local .db file path")
    if is_lite_uri(uri) and not uri.endswith(".db"):
        raise ValueError(
            f"milvus_uri {uri!r}: a local Milvus Lite file must end in .db; a server URI starts with "
            f"http:// or https://"
        )
    return uri


class _LiteIteratorNoise(logging.Filter):
    """Drops pymilvus's "failed to get mvccTs" warning, which every query iterator logs on Milvus Lite
    (Lite sends no session timestamp; the client-side one pymilvus falls back to is correct there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("failed to get mvccTs")


_LITE_NOISE = _LiteIteratorNoise()


def connect(uri: str, *, token: str | None = None) -> Any:
    """A ``pymilvus.MilvusClient`` on a server, or on Milvus Lite for a local ``.db`` path.

    Milvus Lite runs in this process and locks its file: only one process can open it at a time
    (docs/milvus.md). Its parent folder is created.

    Args:
        uri: ``http://host:19530`` (standalone or cluster) or a path ending in ``.db`` (Milvus Lite).
        token: ``user:password`` or an API key for a server; ignored by Milvus Lite.

    Raises:
        ImportError: pymilvus (or, for a file, milvus-lite) is not installed.
        ValueError: a malformed URI.
        RuntimeError: a Milvus Lite file that cannot be opened (e.g. another process holds it).
    """
    check_milvus_uri(uri)
    pymilvus = _pymilvus()
    if is_lite_uri(uri):
        try:
            import milvus_lite  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f'a local Milvus file ({uri}) needs milvus-lite: pip install "vireid[{MILVUS_EXTRA}]"'
            ) from exc
        logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_LITE_NOISE)  # idempotent
        path = Path(uri).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return pymilvus.MilvusClient(uri=str(path))
        except pymilvus.exceptions.MilvusException as exc:
            raise RuntimeError(
                f"cannot open the Milvus Lite file {path}: {exc.message}. Milvus Lite serves one process "
                f"at a time (is another vireid process using it?); several processes need a Milvus "
                f"server (VIREID_MILVUS_URI=http://host:19530)"
            ) from exc
    return pymilvus.MilvusClient(uri=uri, token=token or "")


def collection_name(model_version: str, modality: str, *, prefix: str = DEFAULT_COLLECTION_PREFIX) -> str:
    """Milvus collection name of the index of ``(model_version, modality)``.

    Milvus names hold letters, digits and ``_`` and start with a letter or ``_``; a model version may
    also hold ``.`` and ``-``. The name is ``<prefix>_<modality>_<version with . and - as _>_<first 8
    hex of sha256(version)>``, so versions that differ only in those characters get distinct names.
    At most 64 + 9 + 128 + 9 = 210 characters (Milvus allows 255).

    Raises:
        ValueError: a bad prefix or modality.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"collection prefix must be 1-64 characters of [A-Za-z0-9_] starting with a letter or _, "
            f"got {prefix!r}"
        )
    check_modality(modality)
    safe = re.sub(r"[^A-Za-z0-9_]", "_", model_version)
    digest = hashlib.sha256(model_version.encode()).hexdigest()[:8]
    return f"{prefix}_{modality}_{safe}_{digest}"


def epoch_us(value: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since 1970-01-01 UTC (exact).

    Raises:
        ValueError: a naive datetime.
    """
    if value.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got {value.isoformat()}")
    return (value - _EPOCH) // timedelta(microseconds=1)


def _literal(text: str) -> str:
    """A Milvus expression string literal (double quotes, backslash escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class MetadataFilter:
    """Camera and capture-time filters, run inside Milvus; the same rows as
    :meth:`vireid.index.GalleryRepository.matching_ids` selects in SQL.

    Attributes:
        cameras: keep only these cameras; ``None`` keeps all.
        since: keep ``captured_at >= since`` (timezone-aware); items without a time are dropped.
        until: keep ``captured_at < until`` (timezone-aware); items without a time are dropped.
    """

    cameras: Sequence[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def expression(self) -> str:
        """The Milvus boolean expression (``""`` when nothing is filtered).

        Raises:
            ValueError: a naive datetime.
        """
        clauses: list[str] = []
        if self.cameras is not None:
            clauses.append(f"{CAMERA_FIELD} in [{', '.join(_literal(c) for c in self.cameras)}]")
        if self.since is not None:
            clauses.append(f"{CAPTURED_AT_FIELD} >= {epoch_us(self.since)}")
        if self.until is not None:
            clauses.append(f"{CAPTURED_AT_FIELD} < {epoch_us(self.until)}")
        return " and ".join(f"({c})" for c in clauses)


def _chunks(values: npt.NDArray[np.int64], size: int) -> Iterator[npt.NDArray[np.int64]]:
    for start in range(0, values.size, size):
        yield values[start : start + size]


def _id_expression(ids: npt.NDArray[np.int64]) -> str:
    return f"{ID_FIELD} in [{', '.join(str(int(i)) for i in ids)}]"


class MilvusGalleryIndex:
    """A gallery index kept in one Milvus collection, with the :class:`~vireid.index.GalleryIndex`
    ordering (descending score, then ascending id; ``-1`` / ``-inf`` padding).

    Opening creates the collection when it is missing (schema in the module docstring, consistency
    level ``Strong``, so a search right after an insert sees it) and checks it otherwise. Milvus breaks
    ties between equal scores in no fixed order; like :class:`~vireid.index.FaissGalleryIndex`, this
    class fetches past the ``k``-th result until the tie group at the cut-off is complete and re-sorts.
    It has no ``save``/``load``: Milvus persists the collection itself. Thread-safe as far as the
    client is.

    Args:
        client: a ``pymilvus.MilvusClient`` (:func:`connect`).
        name: collection name (:func:`collection_name`).
        dim: embedding width ``D`` (>= 1).
        index_type: Milvus vector index type (``FLAT`` exact, ``HNSW``, ``IVF_FLAT``, ...).
        index_params: build parameters of that index type (e.g. ``{"M": 16, "efConstruction": 200}``).
        search_params: search parameters (e.g. ``{"ef": 64}`` or ``{"nprobe": 16}``).

    Raises:
        ValueError: a bad ``dim``.
        CorruptIndexError: the collection exists with another schema, width, metric or index type.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        dim: int,
        index_type: str = DEFAULT_MILVUS_INDEX_TYPE,
        index_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._client = client
        self._name = name
        self._dim = int(dim)
        self._index_type = index_type
        self._index_params = dict(index_params or {})
        self._search_params = dict(search_params or {})
        if client.has_collection(name):
            self._check_schema()
            client.load_collection(name)
        else:
            self._create()

    @property
    def name(self) -> str:
        """The collection name."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self._dim

    @property
    def metric(self) -> str:
        """Always ``"ip"``."""
        return "ip"

    def __len__(self) -> int:
        rows = self._client.query(self._name, filter="", output_fields=["count(*)"], **_STRONG)
        return int(rows[0]["count(*)"])

    def __repr__(self) -> str:
        return f"MilvusGalleryIndex({self._name!r}, dim={self._dim}, index_type={self._index_type!r})"

    def _create(self) -> None:
        pymilvus = _pymilvus()
        data_type = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, data_type.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, data_type.FLOAT_VECTOR, dim=self._dim)
        schema.add_field(CAMERA_FIELD, data_type.VARCHAR, max_length=CAMERA_MAX_LENGTH)
        schema.add_field(CAPTURED_AT_FIELD, data_type.INT64, nullable=True)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type=self._index_type,
            metric_type="IP",
            params=self._index_params,
        )
        # Schema first, then the index without pymilvus's poll for its build (an empty collection's
        # index is built at once; Milvus Lite has no AllocTimestamp for the poll), then load.
        self._client.create_collection(self._name, schema=schema, consistency_level="Strong")
        self._client.create_index(self._name, index_params, sync=False)
        self._client.load_collection(self._name)
        logger.info("created Milvus collection %s (dim %d, %s, IP)", self._name, self._dim, self._index_type)

    def _check_schema(self) -> None:
        """Raise :class:`CorruptIndexError` when the collection is not one this class would create."""
        pymilvus = _pymilvus()
        info = self._client.describe_collection(self._name)
        fields = {f["name"]: f for f in info.get("fields", [])}
        want = {
            ID_FIELD: pymilvus.DataType.INT64,
            VECTOR_FIELD: pymilvus.DataType.FLOAT_VECTOR,
            CAMERA_FIELD: pymilvus.DataType.VARCHAR,
            CAPTURED_AT_FIELD: pymilvus.DataType.INT64,
        }
        problems = [
            f"field {name!r} is {fields[name]['type'] if name in fields else 'missing'}, expected {kind}"
            for name, kind in want.items()
            if name not in fields or fields[name]["type"] != kind
        ]
        if not problems:
            if not fields[ID_FIELD].get("is_primary"):
                problems.append(f"{ID_FIELD!r} is not the primary key")
            got_dim = int(fields[VECTOR_FIELD].get("params", {}).get("dim", -1))
            if got_dim != self._dim:
                problems.append(f"vector dim is {got_dim}, expected {self._dim}")
            if not fields[CAPTURED_AT_FIELD].get("nullable"):
                problems.append(f"{CAPTURED_AT_FIELD!r} is not nullable")
        if not problems:
            index = self._client.describe_index(self._name, VECTOR_FIELD) or {}
            metric, kind = index.get("metric_type"), index.get("index_type")
            if metric != "IP" or kind != self._index_type:
                problems.append(f"vector index is {kind}/{metric}, expected {self._index_type}/IP")
        if problems:
            raise CorruptIndexError(f"Milvus collection {self._name} does not match: {'; '.join(problems)}")

    def drop(self) -> None:
        """Drop the collection (its data is gone)."""
        self._client.drop_collection(self._name)

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending (read with a query iterator, :data:`_ITER_BATCH` at a time)."""
        iterator = self._client.query_iterator(
            self._name, batch_size=_ITER_BATCH, output_fields=[ID_FIELD], **_STRONG
        )
        found: list[int] = []
        try:
            while batch := iterator.next():
                found.extend(int(row[ID_FIELD]) for row in batch)
        finally:
            iterator.close()
        return np.sort(np.asarray(found, dtype=np.int64))

    def present(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The subset of ``(M,)`` ids held by the collection, ascending."""
        wanted = np.unique(as_ids(ids))
        found: list[int] = []
        for chunk in _chunks(wanted, _ID_CHUNK):
            rows = self._client.query(
                self._name, filter=_id_expression(chunk), output_fields=[ID_FIELD], **_STRONG
            )
            found.extend(int(row[ID_FIELD]) for row in rows)
        return np.sort(np.asarray(found, dtype=np.int64))

    def add(
        self,
        ids: npt.ArrayLike,
        vectors: npt.NDArray[np.float32],
        *,
        cameras: Sequence[str],
        captured_at: Sequence[datetime | None],
    ) -> None:
        """Insert ``(N,)`` new ids with their ``(N, D)`` float32 vectors and metadata.

        Args:
            ids: non-negative int64 SQL ids, none already present.
            vectors: ``(N, D)`` float32.
            cameras: N camera names (1-64 characters).
            captured_at: N timezone-aware capture times or ``None``.

        Raises:
            ValueError: a bad shape, dtype or value, a length mismatch, or an id repeated or already
                present. Nothing is inserted then; when Milvus fails mid-way, the rows inserted by this
                call are deleted again before the error is raised.
        """
        new_ids, rows = self._rows(ids, vectors, cameras=cameras, captured_at=captured_at)
        present = self.present(new_ids)
        if present.size:
            raise ValueError(f"ids are already in the index: {present[:10].tolist()}")
        done = 0
        try:
            for start in range(0, len(rows), _WRITE_BATCH):
                self._client.insert(self._name, rows[start : start + _WRITE_BATCH])
                done = start + _WRITE_BATCH
        except BaseException:
            if done:
                self._client.delete(self._name, ids=new_ids[:done].tolist())
            raise

    def upsert(
        self,
        ids: npt.ArrayLike,
        vectors: npt.NDArray[np.float32],
        *,
        cameras: Sequence[str],
        captured_at: Sequence[datetime | None],
    ) -> None:
        """Insert or replace rows (same arguments as :meth:`add`; present ids are overwritten).

        Raises:
            ValueError: a bad shape, dtype or value, a length mismatch or a repeated id.
        """
        _, rows = self._rows(ids, vectors, cameras=cameras, captured_at=captured_at)
        for start in range(0, len(rows), _WRITE_BATCH):
            self._client.upsert(self._name, rows[start : start + _WRITE_BATCH])

    def _rows(
        self,
        ids: npt.ArrayLike,
        vectors: npt.NDArray[np.float32],
        *,
        cameras: Sequence[str],
        captured_at: Sequence[datetime | None],
    ) -> tuple[npt.NDArray[np.int64], list[dict[str, Any]]]:
        new_vectors = as_vectors(vectors, dim=self._dim)
        new_ids = as_ids(ids)
        n = new_ids.shape[0]
        if new_vectors.shape[0] != n or len(cameras) != n or len(captured_at) != n:
            raise ValueError(
                f"got {n} ids, {new_vectors.shape[0]} vectors, {len(cameras)} cameras and "
                f"{len(captured_at)} capture times"
            )
        uniq, counts = np.unique(new_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids are repeated in the batch: {uniq[counts > 1][:10].tolist()}")
        for camera in cameras:
            if not isinstance(camera, str) or not 1 <= len(camera) <= CAMERA_MAX_LENGTH:
                raise ValueError(f"camera must be a string of 1-{CAMERA_MAX_LENGTH} characters: {camera!r}")
        times = [None if t is None else epoch_us(t) for t in captured_at]
        rows = [
            {ID_FIELD: int(i), VECTOR_FIELD: v.tolist(), CAMERA_FIELD: c, CAPTURED_AT_FIELD: t}
            for i, v, c, t in zip(new_ids, new_vectors, cameras, times, strict=True)
        ]
        return new_ids, rows

    def remove(self, ids: npt.ArrayLike) -> int:
        """Delete ``(M,)`` ids; unknown ids are ignored. Returns how many were removed."""
        present = self.present(ids)
        for chunk in _chunks(present, _ID_CHUNK):
            self._client.delete(self._name, ids=chunk.tolist())
        return int(present.size)

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
        where: MetadataFilter | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``k`` best ids of each query, with the shared ordering; see :meth:`GalleryIndex.search`.

        Args:
            vectors: ``(Q, D)`` float32 queries.
            k: results per query (>= 1).
            allowed_ids: optional ``(M,)`` ids that may be returned (an ``id in [...]`` expression;
                prefer ``where`` for camera or time filters).
            where: camera and time filters, run inside Milvus.
            nprobe: this search's ``nprobe`` (IVF index types only; others ignore it).
            ef_search: this search's ``ef`` (HNSW index types only; others ignore it).

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``: IP scores as Milvus computed them,
            ``-1`` / ``-inf`` padded. When k items pass the filters, k are returned.

        Raises:
            ValueError: bad queries, ``k`` (or above :data:`MAX_TOPK`), ``allowed_ids`` or a naive
                datetime in ``where``.
        """
        queries = as_vectors(vectors, dim=self._dim)
        k = check_k(k)
        if k > MAX_TOPK:
            raise ValueError(f"k must be at most {MAX_TOPK} (Milvus's topK limit), got {k}")
        nq = queries.shape[0]
        out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
        out_ids = np.full((nq, k), -1, dtype=np.int64)
        clauses = [where.expression()] if where is not None else []
        if allowed_ids is not None:
            allowed = np.unique(as_ids(allowed_ids, name="allowed_ids"))
            if allowed.size == 0:
                return out_scores, out_ids
            clauses.append(_id_expression(allowed))
        expression = " and ".join(f"({c})" for c in clauses if c)
        params = dict(self._search_params)
        if nprobe is not None and self._index_type.upper().startswith("IVF"):
            params["nprobe"] = int(nprobe)
        if ef_search is not None and self._index_type.upper().startswith("HNSW"):
            params["ef"] = max(int(ef_search), min(k + _TIE_MARGIN, MAX_TOPK))
        fetch = min(k + _TIE_MARGIN, MAX_TOPK)
        pending = np.arange(nq)
        while pending.size:
            scores, found, complete = self._search_once(
                queries[pending], fetch, expression=expression, params=params
            )
            if fetch < MAX_TOPK:
                done = complete | (scores[:, fetch - 1] != scores[:, min(k, fetch) - 1])
            else:
                done = np.ones(pending.size, dtype=bool)
                if not complete.all():
                    logger.warning(
                        "%s: a tie at rank %d runs past Milvus's topK limit %d; ids beyond it are unseen",
                        self._name,
                        k,
                        MAX_TOPK,
                    )
            ranked_scores, ranked_ids = rank_results(scores[done], found[done], k=k)
            out_scores[pending[done]] = ranked_scores
            out_ids[pending[done]] = ranked_ids
            pending = pending[~done]
            fetch = min(fetch * 2, MAX_TOPK)
        return out_scores, out_ids

    def _search_once(
        self, queries: npt.NDArray[np.float32], limit: int, *, expression: str, params: dict[str, Any]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """One Milvus search: ``(scores (Q, limit), ids (Q, limit) -1 padded, complete (Q,))`` where
        ``complete`` says that fewer than ``limit`` candidates exist (every one was returned)."""
        result = self._client.search(
            self._name,
            data=[q.tolist() for q in queries],
            limit=limit,
            filter=expression,
            output_fields=[ID_FIELD],
            search_params={"metric_type": "IP", "params": params},
            anns_field=VECTOR_FIELD,
            **_STRONG,
        )
        nq = queries.shape[0]
        scores = np.full((nq, limit), -np.inf, dtype=np.float32)
        ids = np.full((nq, limit), -1, dtype=np.int64)
        complete = np.zeros(nq, dtype=bool)
        for row, hits in enumerate(result):
            n = len(hits)
            complete[row] = n < limit
            if n:
                ids[row, :n] = [int(hit["id"]) for hit in hits]
                scores[row, :n] = np.asarray([hit["distance"] for hit in hits], dtype=np.float32)
        return scores, ids, complete
