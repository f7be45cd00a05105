"""A chunk of input rows encoded into the model's input matrix exactly as the servers encode a request.

Values go through the serving decoder's rules (``kfloop.inference.requests``), column by column instead
of row by row: a numeric column of numbers is converted as a request's numbers are (through float64 to
float32); a column holding text (a CSV column where some value is not a number) is checked value by
value with the decoder's own test, and a row with a value the predictor would refuse is set aside with
the reason instead of failing the chunk. A categorical column is encoded once per distinct value with the
decoder's ``category_codes``: missing and unseen values are NaN, and unseen ones are counted and kept per
row for capture, as online.

``check_columns`` refuses an input that lacks feature columns, naming them, before anything is predicted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.errors import DataError
from kfloop.inference.requests import RequestDecoder, is_number
from kfloop.schema import FeatureSchema


def check_columns(columns: Sequence[str], schema: FeatureSchema, uri: str, id_column: str = "") -> None:
    """DataError naming the feature columns (and the id column) the input lacks."""
    present = set(columns)
    missing = [n for n in schema.names if n not in present]
    problems = [f"lacks the feature columns {missing}"] if missing else []
    if id_column and id_column not in present:
        problems.append(f"has no id column {id_column!r}")
    if problems:
        raise DataError(
            f"input {uri} {' and '.join(problems)}; the model's features are {schema.names}, "
            f"the input's columns are {list(columns)}"
        )


@dataclasses.dataclass
class EncodedChunk:
    """The encoded rows of a chunk that can be predicted, and the ones that cannot."""

    X: np.ndarray  # [accepted rows, features] float32
    accepted: np.ndarray  # the accepted rows' positions in the chunk (int64, ascending)
    rejected: dict[int, str]  # position in the chunk -> reason
    unseen: dict[str, int]  # per feature, unseen categorical values among the accepted rows
    unseen_rows: dict[int, dict]  # position in the chunk -> {feature: unseen value}, accepted rows only
    # features as captured, computed on the way, all rows: the float64 values of numeric text (CSV) that
    # converted as a whole, the dictionary-encoded categories; so capture records need neither the text
    # converted again nor the chunk's text columns (a CSV chunk's text columns share its parsed blocks)
    received: dict[str, pa.Array | pa.ChunkedArray] = dataclasses.field(default_factory=dict)


class ChunkEncoder:
    """Encodes chunks (Arrow tables holding every feature column) for one schema."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        self.decoder = RequestDecoder(schema)

    def encode(self, table: pa.Table) -> EncodedChunk:
        n = table.num_rows
        X = np.empty((n, len(self.schema.features)), dtype=np.float32)
        rejected: dict[int, str] = {}
        unseen_at: dict[str, np.ndarray] = {}
        received: dict[str, pa.Array | pa.ChunkedArray] = {}
        for j, feature in enumerate(self.schema.features):
            column = table.column(feature.name)
            if feature.kind == "categorical":
                X[:, j], mask = self._categorical(feature.name, column, rejected, received)
                if mask is not None:
                    unseen_at[feature.name] = mask
            else:
                X[:, j] = self._numeric(feature.name, column, rejected, received)
        if not rejected:
            accepted = np.arange(n)
        else:
            keep = np.ones(n, dtype=bool)
            keep[list(rejected)] = False
            accepted = np.flatnonzero(keep)
            X = X[accepted]
        unseen, unseen_rows = {}, {}
        for name, mask in unseen_at.items():
            mask = mask.copy()
            mask[list(rejected)] = False
            rows = np.flatnonzero(mask)
            if len(rows):
                unseen[name] = len(rows)
                for i, value in zip(rows.tolist(), table.column(name).take(pa.array(rows)).to_pylist()):
                    unseen_rows.setdefault(i, {})[name] = value
        return EncodedChunk(X, accepted, rejected, unseen, unseen_rows, received)

    def _numeric(self, name: str, column: pa.ChunkedArray, rejected: dict[int, str], received: dict) -> np.ndarray:
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            # a request's numbers are Python floats/ints converted by numpy: through float64, as here
            return pc.cast(column, pa.float64()).to_numpy().astype(np.float32)
        if pa.types.is_null(kind):
            return np.full(len(column), np.nan, dtype=np.float32)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            try:  # numeric text, as the decoder reads "1.5": through float64 to float32
                received[name] = pc.cast(column, pa.float64())
                return received[name].to_numpy().astype(np.float32)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        values = column.to_pylist()
        try:
            return np.asarray(values, dtype=np.float32)  # the decoder's own conversion (numeric text too)
        except (ValueError, TypeError, OverflowError):
            pass
        out = np.full(len(values), np.nan, dtype=np.float32)
        for i, value in enumerate(values):
            if value is None:
                continue
            if is_number(value):
                out[i] = np.float32(np.asarray(value, dtype=np.float32))
            else:
                rejected.setdefault(i, f"feature {name!r}: expected a number or null; got {value!r}")
        return out

    def _categorical(
        self, name: str, column: pa.ChunkedArray, rejected: dict[int, str], received: dict
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes, and a mask of the rows holding unseen values (None when there are none)."""
        if pa.types.is_nested(column.type):
            bad = [i for i, v in enumerate(column.to_pylist()) if v is not None]
            for i in bad:
                rejected.setdefault(i, f"feature {name!r}: expected a category string or null")
            return np.full(len(column), np.nan, dtype=np.float32), None
        encoded = column.combine_chunks()
        if not pa.types.is_dictionary(encoded.type):
            encoded = pc.dictionary_encode(encoded)
        if pa.types.is_string(encoded.dictionary.type) or pa.types.is_large_string(encoded.dictionary.type):
            received[name] = encoded
        distinct = encoded.dictionary.to_pylist()
        codes, n_unseen = self.decoder.category_codes(name, distinct)
        lookup = np.append(np.asarray(codes, dtype=np.float32), np.float32(np.nan))  # last: null
        indices = pc.fill_null(encoded.indices, len(distinct)).to_numpy().astype(np.int64)
        out = lookup[indices]
        if not n_unseen:
            return out, None
        unseen_codes = [i for i, (v, c) in enumerate(zip(distinct, codes)) if v is not None and c != c]
        return out, np.isin(indices, unseen_codes)
