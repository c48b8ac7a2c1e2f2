"""Read a corpus in CFPB export format.

The CFPB's ``complaints.csv`` names its columns ``Complaint ID``, ``Consumer complaint
narrative``, ``Product``, ...; the column names are configurable (``LoopConfig``).
Rows that cannot be used are never dropped silently: they come back as *rejects*, each
with its CSV line number and the reason.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.errors import CorpusError


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A cleaned corpus.

    Attributes
    ----------
    docs : DataFrame with columns ``id`` (int64, unique), ``text`` (str), and, when the
        file has it, ``label`` (str, the ground-truth column: simulation and benchmarks).
    rejects : DataFrame with columns ``line`` (CSV line number; header = 1), ``id``,
        ``reason``: every row left out of ``docs``.
    source : str, the file read.
    """

    docs: pd.DataFrame
    rejects: pd.DataFrame
    source: str

    def __len__(self) -> int:
        return len(self.docs)


def read_corpus(path: str | Path, config: LoopConfig | None = None, *, with_labels: bool = True) -> Corpus:
    """Read ``path`` (CSV, CSV.gz or Parquet) into a :class:`Corpus`.

    Rows without narrative, with a non-integer id, with bytes that are not UTF-8, or
    whose id was already seen are rejected with a reason (the first occurrence of a
    duplicated id is kept).
    """
    config = config or LoopConfig()
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus file not found")
    label_column = config.label_column if with_labels else ""
    raw = _read_raw(path, [config.id_column, config.text_column], label_column)
    docs, rejects = check_records(raw, config, label_column=label_column, bad_bytes=not _is_valid_utf8(path))
    return Corpus(docs=docs, rejects=rejects, source=str(path))


def _read_raw(path: Path, wanted: list[str], label_column: str) -> pd.DataFrame:
    """The file's id, text (and label) columns as str; raises :class:`CorpusError`."""
    if path.suffix == ".parquet" or path.is_dir():
        raw = pd.read_parquet(path)
        raw = raw.astype({c: str for c in raw.columns if c in wanted}, errors="ignore")
    else:
        try:
            # Bad bytes become U+FFFD so the row can be rejected by line, not the file.
            raw = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8",
                encoding_errors="replace",
                usecols=lambda c: c in {*wanted, label_column},
            )
        except pd.errors.EmptyDataError as exc:
            raise CorpusError(f"{path}: file is empty") from exc
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; found {list(raw.columns)[:20]}")
    return raw


def check_records(
    raw: pd.DataFrame, config: LoopConfig, *, label_column: str = "", bad_bytes: bool = False, first_line: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw corpus records into (docs, rejects) by the corpus rules.

    Parameters
    ----------
    raw : DataFrame of str with the id and text columns (and ``label_column``), one row per record
    config : LoopConfig (column names)
    label_column : ground-truth column to keep as ``label`` ("" for none)
    bad_bytes : the file had bytes that are not UTF-8 (decoded as U+FFFD): name them
    first_line : the CSV line number of the first record (header = 1)

    Returns
    -------
    docs : DataFrame ``id`` int64, ``text`` str (and ``label``)
    rejects : DataFrame ``line``, ``id``, ``reason``
    """
    ids = raw[config.id_column].astype(str).str.strip()
    texts = raw[config.text_column].astype(str)
    reasons = pd.Series("", index=raw.index, dtype=object)

    def flag(mask: pd.Series, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    if bad_bytes:
        flag(texts.str.contains("\ufffd", regex=False), "narrative has bytes that are not UTF-8")
        flag(ids.str.contains("\ufffd", regex=False), "id has bytes that are not UTF-8")
    flag(texts.str.strip().isin(["", "nan", "None"]), "empty narrative")
    numeric_ids = pd.to_numeric(ids.str.replace(r"\.0$", "", regex=True), errors="coerce")
    flag(numeric_ids.isna() | (numeric_ids % 1 != 0), "id is not a whole number")
    flag(
        (reasons == "") & numeric_ids.duplicated(keep="first") & numeric_ids.notna(),
        "duplicate id (first occurrence kept)",
    )
    keep = (reasons == "").to_numpy()
    docs = pd.DataFrame({"id": numeric_ids[keep].astype("int64").to_numpy(), "text": texts[keep].to_numpy()})
    if label_column and label_column in raw.columns:
        docs["label"] = raw.loc[keep, label_column].astype(str).str.strip().to_numpy()
    rejects = pd.DataFrame(
        {
            "line": (np.flatnonzero(~keep) + first_line).astype("int64"),
            "id": ids[~keep].to_numpy(),
            "reason": reasons[~keep].to_numpy(),
        }
    )
    return docs.reset_index(drop=True), rejects


def _is_valid_utf8(path: Path) -> bool:
    """True when the (optionally gzipped) file decodes as UTF-8 throughout."""
    import codecs
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with opener(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def binary_labels(labels: pd.Series | np.ndarray, positive_class: str) -> np.ndarray:
    """Map a multi-class label column to ``positive_class`` / ``rest``."""
    arr = np.asarray(labels, dtype=object)
    return np.where(arr == positive_class, positive_class, "rest").astype(object)
