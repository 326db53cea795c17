"""Bulk import of embeddings computed elsewhere (``vireid ingest --embeddings``, issue #14 item 4).

Input is a pair of files that describe the same N items in the same order:

* ``FILE.npy``: an ``(N, D)`` array of float32 (float16 and float64 are converted to float32), every
  value finite, ``D`` equal to the ``embedding_dim`` the model registry holds for the target version.
  Rows are **L2-normalised on import** (search is inner product, i.e. cosine on unit rows, as the
  embedders produce them); a row of norm zero is refused. The report counts the rows that were not unit
  norm already (``|‖v‖ - 1| > 1e-3``), so a file of unnormalised features is visible, not silent.
* ``FILE.csv`` (UTF-8, header row): one row per vector. Columns: ``camera`` and ``modality``
  (``visible``/``infrared``) required; ``captured_at`` (ISO 8601, naive = UTC), ``track_id``, ``source``
  and ``sha256`` optional. Unknown columns are ignored.

Dedup key. Without an image there are no image bytes to hash, so each item's ``sha256`` is either given
(the ``sha256`` column: 64 hex digits, e.g. the SHA-256 of the original crop; rows of one file may mix
given and empty) or derived as ``SHA-256(b"vireid-embedding\\0" + source UTF-8 + b"\\0" + the normalised
vector as little-endian float32)``. The same rules as the image ingest follow: an item whose
``(sha256, modality)`` the version already holds, or that repeats an earlier row of the file, is skipped
and reported as a duplicate with the stored id. Give the crop's SHA-256 when the same gallery is imported
for several model versions or was also ingested as images: only then do the versions agree on what one
gallery image is (``GET /models`` completeness, activation). Items imported without a crop have no
stored image: ``GET /gallery/{id}/image`` answers 404 for them and ``vireid reindex`` counts them as
"without a stored crop" (a new model version needs their embeddings imported again).

Validation reads both files completely before anything is written (row count, modality, timestamp,
text bounds, hex digest, dtype, shape, dim, finite values, zero rows); any problem raises
:class:`~vireid.api.errors.InvalidInputError` listing the first ones, and SQL and the indexes stay
untouched. Writing then follows the image ingest (:mod:`vireid.api.services._gallery`, and
docs/reliability.md): batches of rows (growing with the index, see :data:`BATCH_GROWTH`), each one SQL
transaction; the vectors are added to the in-memory
index inside it and removed again on any error; the index is saved (temp file + rename) after the
commit. A kill loses no committed batch; an index file older than SQL is rebuilt from SQL at the next
start.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from vireid.api._bounds import MAX_CAMERA_CHARS, MAX_SOURCE_CHARS, MAX_TRACK_ID_CHARS, check_text
from vireid.api.errors import InvalidInputError, NotFoundError
from vireid.api.services._context import ServiceContext
from vireid.api.services._layouts import _parse_time
from vireid.api.services._records import parse_modality
from vireid.api.settings import MODALITIES, Modality

if TYPE_CHECKING:
    from vireid.api.services._gallery import IngestOutcome, IngestReport, Status
    from vireid.index import NewItem

__all__ = [
    "DEFAULT_IMPORT_BATCH",
    "EmbeddingImport",
    "derived_sha256",
    "import_embeddings",
    "read_embedding_import",
    "registered_dim",
]

logger = logging.getLogger(__name__)

#: Smallest number of rows per SQL transaction + index save (4096 rows of D=2048 are 32 MiB of vectors).
DEFAULT_IMPORT_BATCH: Final = 4096
#: A batch is also at least this share of the rows the version's indexes already hold: every save
#: rewrites the whole index file, so fixed batches would write O(N^2) bytes over an import of N rows;
#: growing batches keep the total within about (1 + 1 / BATCH_GROWTH) x the final index size.
BATCH_GROWTH: Final = 0.25
#: ... but never more than this many bytes of float32 vectors per batch (65536 rows at D=2048).
MAX_BATCH_BYTES: Final = 512 * 1024 * 1024
#: Rows whose norm differs from 1 by more than this are counted as renormalised.
UNIT_TOLERANCE: Final = 1e-3
_ACCEPTED_DTYPES: Final = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_CHECK_CHUNK: Final = 8192
_MAX_LISTED: Final = 10
_HEX: Final = frozenset("0123456789abcdef")
_KEY_PREFIX: Final = b"vireid-embedding\0"


@dataclass
class EmbeddingImport:
    """A validated import: N items and their vectors, read lazily from the ``.npy`` (memory-mapped).

    Attributes:
        items: metadata of the N rows, in file order (``sha256`` given or derived).
        vectors: ``(N, D)`` array as stored in the file (float16/32/64, memory-mapped); rows are
            converted to float32 and normalised by :meth:`rows`.
        renormalised: rows that were not unit norm in the file.
        source: where the rows came from, for messages (``"<npy> + <csv>"``).
    """

    items: list[NewItem]
    vectors: np.ndarray = field(repr=False)
    renormalised: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        """D."""
        return int(self.vectors.shape[1])

    def rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Rows ``start:stop`` as ``(n, D)`` float32, L2-normalised."""
        return _normalised(self.vectors[start:stop])


def _normalised(block: np.ndarray) -> npt.NDArray[np.float32]:
    out = np.array(block, dtype=np.float32, copy=True)
    out /= np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
    return out


def derived_sha256(source: str | None, vector: npt.NDArray[np.float32]) -> str:
    """The dedup key of a row without a ``sha256``: SHA-256 of a fixed prefix, the source and the
    normalised ``(D,)`` float32 vector's little-endian bytes."""
    digest = hashlib.sha256(_KEY_PREFIX)
    digest.update((source or "").encode("utf-8"))
    digest.update(b"\0")
    digest.update(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    return digest.hexdigest()


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"no such embeddings file: {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise InvalidInputError(f"{path}: holds several arrays (.npz); give one (N, D) .npy array")
    if array.dtype not in _ACCEPTED_DTYPES:
        raise InvalidInputError(f"{path}: dtype {array.dtype} is not float16, float32 or float64")
    if array.ndim != 2:
        raise InvalidInputError(f"{path}: shape {array.shape} is not (N, D)")
    return array


def _read_metadata(path: Path, problems: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no such metadata file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise InvalidInputError(f"{path}: empty file; needs a header row with camera and modality")
        reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        missing = [c for c in ("camera", "modality") if c not in reader.fieldnames]
        if missing:
            raise InvalidInputError(f"{path}: the header row lacks the column(s) {', '.join(missing)}")
        rows = []
        for row in reader:
            if None in row:  # more fields than the header names
                problems.append(f"line {reader.line_num}: more fields than the header has columns")
            rows.append({k: (v or "") for k, v in row.items() if isinstance(k, str)})
    return rows


def _row_item(row: dict[str, str], unit: npt.NDArray[np.float32]) -> NewItem:
    """The item of one CSV row; ``unit`` is its normalised vector (for a derived ``sha256``)."""
    from vireid.index import NewItem

    camera = row.get("camera", "").strip()
    check_text(camera, name="camera", max_chars=MAX_CAMERA_CHARS)
    modality = parse_modality(row.get("modality", ""))
    track_id = row.get("track_id", "").strip() or None
    if track_id is not None:
        check_text(track_id, name="track_id", max_chars=MAX_TRACK_ID_CHARS)
    source = row.get("source", "").strip() or None
    if source is not None:
        check_text(source, name="source", max_chars=MAX_SOURCE_CHARS)
    given = row.get("sha256", "").strip().lower()
    if given and (len(given) != 64 or not set(given) <= _HEX):
        raise InvalidInputError(f"sha256 must be 64 hex digits, got {given[:80]!r}")
    return NewItem(
        camera=camera,
        modality=modality,
        captured_at=_parse_time(row.get("captured_at")),
        track_id=track_id,
        source=source,
        sha256=given or derived_sha256(source, unit),
    )


def read_embedding_import(embeddings: Path, metadata: Path, *, dim: int) -> EmbeddingImport:
    """Read and validate an embeddings file and its metadata CSV completely; nothing is written.

    Args:
        embeddings: ``.npy`` file of an ``(N, D)`` float16/32/64 array (read memory-mapped).
        metadata: CSV with one row per vector (columns in the module docstring).
        dim: the embedding dimension of the target model version; ``D`` must equal it.

    Returns:
        The validated import (vectors still memory-mapped, normalised per batch when written).

    Raises:
        FileNotFoundError: a file is missing.
        InvalidInputError: any problem in either file; the message lists the first ones with their CSV
            line or vector row.
    """
    array = _load_npy(embeddings)
    problems: list[str] = []
    rows = _read_metadata(metadata, problems)
    n, d = (int(s) for s in array.shape)
    if d != dim:
        raise InvalidInputError(f"{embeddings}: vectors have D={d}, the model version embeds D={dim}")
    if len(rows) != n:
        raise InvalidInputError(
            f"{metadata} has {len(rows)} data rows but {embeddings} has {n} vectors; they must match 1:1"
        )
    if n == 0:
        raise InvalidInputError(f"{embeddings}: no vectors")
    items: list[NewItem] = []
    renormalised = 0
    for start in range(0, n, _CHECK_CHUNK):
        block = np.asarray(array[start : start + _CHECK_CHUNK])
        finite = np.isfinite(block).all(axis=1)
        norms = np.linalg.norm(np.where(finite[:, None], block, 0).astype(np.float64), axis=1)
        ok = finite & (norms > 0)
        for bad in np.flatnonzero(~ok)[: _MAX_LISTED + 1]:
            what = "NaN or infinite values" if not finite[bad] else "norm 0"
            problems.append(f"vector row {start + int(bad)}: {what}")
        renormalised += int(np.count_nonzero(ok & (np.abs(norms - 1.0) > UNIT_TOLERANCE)))
        unit = np.zeros(block.shape, dtype=np.float32)
        unit[ok] = _normalised(block[ok])
        for offset, row in enumerate(rows[start : start + _CHECK_CHUNK]):
            line = start + offset + 2  # header is line 1
            try:
                items.append(_row_item(row, unit[offset]))
            except (InvalidInputError, ValueError) as exc:
                detail = exc.detail if isinstance(exc, InvalidInputError) else str(exc)
                problems.append(f"{metadata.name} line {line}: {detail}")
        if len(problems) > _MAX_LISTED:
            break
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED])
        more = " (and more)" if len(problems) > _MAX_LISTED else ""
        raise InvalidInputError(
            f"nothing imported, {embeddings.name} + {metadata.name} are invalid: {shown}{more}"
        )
    return EmbeddingImport(items, array, renormalised, f"{embeddings} + {metadata}")


def registered_dim(context: ServiceContext, version: str) -> int:
    """The ``embedding_dim`` the model registry holds for ``version``.

    Raises:
        NotFoundError: ``version`` is not registered (the message says how to register it).
    """
    if context.registry is None:
        raise RuntimeError("this context has no model registry")
    with context.session() as session:
        row = context.registry.get(session=session, version=version)
        dim = None if row is None else int(row.embedding_dim)
    if dim is None:
        raise NotFoundError(
            f"model version {version!r} is not registered in {context.settings.data_dir}: register its "
            "exported model first with `vireid reindex --model DIR` (or start the service with that model), "
            "then import its embeddings"
        )
    return dim


def import_embeddings(
    context: ServiceContext,
    data: EmbeddingImport,
    *,
    model_version: str,
    batch_size: int = DEFAULT_IMPORT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Write a validated import into SQL and ``model_version``'s indexes, batch by batch.

    Each batch: under the write lock, the rows the version already holds (same ``sha256`` and
    modality) or that repeat an earlier row are reported as duplicates; the others are inserted with
    :meth:`vireid.index.GalleryRepository.add_items_bulk` and added to the in-memory index, the
    transaction is committed (on error: rolled back and the vectors removed from the index again), then
    the changed indexes are saved.

    Args:
        context: the open context (its registry must hold ``model_version``).
        data: from :func:`read_embedding_import`.
        model_version: target version; need not be the active one (the service loads its indexes when
            it activates it).
        batch_size: the fewest rows per transaction; a batch also holds at least
            :data:`BATCH_GROWTH` of the rows the version's indexes already hold (each save rewrites the
            index file), up to :data:`MAX_BATCH_BYTES` of vectors.
        progress: called with the number of rows finished after each batch.

    Returns:
        One outcome per row, in file order (``source`` is the row's ``source`` or ``"row <i>"``).

    Raises:
        NotFoundError: the version is not registered.
        InvalidInputError: the vectors' D differs from the version's.
        Exception: a storage failure; earlier batches stay committed.
    """
    from vireid.api.services._gallery import IngestReport

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dim = registered_dim(context, model_version)
    if data.dim != dim:
        raise InvalidInputError(f"vectors have D={data.dim}, model version {model_version} embeds D={dim}")
    ctx = context
    with ctx.lock, ctx.session() as session:
        for modality in MODALITIES:
            ctx.store.load_or_rebuild(
                model_version, modality, dim=dim, session=session, repository=ctx.repository
            )
    report = IngestReport()
    largest = max(batch_size, MAX_BATCH_BYTES // (4 * dim))
    start = 0
    while start < len(data):
        held = sum(len(ctx.store.get(model_version, m, dim=dim)) for m in MODALITIES)
        stop = min(start + max(batch_size, min(int(held * BATCH_GROWTH), largest)), len(data))
        report.extend(_import_batch(ctx, data, start, stop, model_version=model_version, dim=dim))
        if progress is not None:
            progress(stop - start)
        start = stop
    logger.info(
        "import %s: %d added, %d duplicates, %d rows renormalised",
        model_version,
        report.added,
        report.duplicates,
        data.renormalised,
    )
    return report


def _import_batch(
    ctx: ServiceContext, data: EmbeddingImport, start: int, stop: int, *, model_version: str, dim: int
) -> list[IngestOutcome]:
    from vireid.api.services._gallery import IngestOutcome

    vectors = data.rows(start, stop)
    items = data.items[start:stop]
    names = [item.source or f"row {start + i}" for i, item in enumerate(items)]
    outcomes: list[IngestOutcome | None] = [None] * len(items)
    added: dict[Modality, np.ndarray] = {}
    with ctx.lock:
        ctx.refresh()
        with ctx.session() as session:
            try:
                for modality in MODALITIES:
                    positions = [i for i, item in enumerate(items) if item.modality == modality]
                    if not positions:
                        continue
                    existing = ctx.repository.find_existing(
                        session=session,
                        sha256s={items[i].sha256 for i in positions},
                        model_version=model_version,
                        modality=modality,
                    )
                    first: dict[str, int] = {}
                    for i in positions:
                        if items[i].sha256 in existing:
                            outcomes[i] = IngestOutcome(names[i], "duplicate", id=existing[items[i].sha256])
                        else:
                            first.setdefault(items[i].sha256, i)
                    new = sorted(first.values())
                    if not new:
                        continue
                    ids = np.asarray(
                        ctx.repository.add_items_bulk(
                            session=session,
                            items=[items[i] for i in new],
                            vectors=vectors[new],
                            model_version=model_version,
                        ),
                        dtype=np.int64,
                    )
                    added[modality] = ids  # before the add: a failing add may have added some of them
                    ctx.store.get(model_version, modality, dim=dim).add(ids, vectors[new])
                    id_of = {items[i].sha256: int(j) for i, j in zip(new, ids, strict=True)}
                    for i in positions:
                        if outcomes[i] is None:
                            is_first = first[items[i].sha256] == i
                            status: Status = "added" if is_first else "duplicate"
                            outcomes[i] = IngestOutcome(names[i], status, id=id_of[items[i].sha256])
                session.commit()
            except BaseException:
                for modality, ids in added.items():
                    ctx.store.get(model_version, modality, dim=dim).remove(ids)
                raise
        for modality in added:
            ctx.store.save(model_version, modality)
    return [o for o in outcomes if o is not None]
