"""Inference requests on KServe's V1 and V2 JSON protocols: decoded into the model's float32 input
matrix, read back as rows by feature name, and rebuilt in the other protocol.

``RequestDecoder`` decodes V1 bodies and V2 inputs (the predictor and the drift transformer both
decode here). The values are encoded as ``FeatureSchema.encode_columns`` encodes training data:
numbers as float32 (numeric strings such as ``"1.5"`` are accepted, as ``pd.to_numeric`` accepts
them in training), categories as their index in the schema's sorted ``categories``, missing
(``null``/NaN) and unseen categories as NaN. One value rule (``check_values``) holds on every path:
booleans, non-finite strings ("NaN", "-inf"), magnitudes of 2**64 or more, and values that do not
fit a V2 input's declared datatype (INT64 42.7, UINT8 -5, FP16 1e6) are refused. Unseen categories
are counted per feature, not rejected. Every malformed request raises ``InvalidRequest`` with a message
that names the field.

This is a second implementation of the schema's encoding, specialised for serving, and it stays one:
the schema's pandas encoder costs ~330 us for one churn row (~450 us for 100), this one ~10 us
(~50 us for 100), when the predictor's whole request takes a few hundred. It works on the parsed
JSON lists directly: an all-numeric batch is one ``np.asarray`` call, categorical values go through
a ``{category: code}`` dict built once per schema; no pandas. ``tests/inference/test_requests.py``
holds the two equal on the values both accept (an empty string is NaN in training and refused here).

``v1_rows`` and ``v2_rows`` give an accepted request's rows as ``{feature: value}`` for capture;
``request_in`` rebuilds a request from the decoded matrix for a predictor on the other protocol
(``v1_request``, ``v2_request``). The outputs a V2 request asks for are ``responses``' concern.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from kfloop.errors import InvalidRequest
from kfloop.inference.tensors import NUMERIC_DATATYPES, Tensor, plain_values
from kfloop.schema import FeatureSchema, label_key

DEFAULT_MAX_BATCH = 10_000


@dataclasses.dataclass
class Decoded:
    """A decoded request: the model's input matrix and the unseen categories per feature; for rows of
    JSON numbers and nulls (V1 lists of an all-numeric model), also ``exact``: the same rows as float64,
    which holds every value as received (the values below 2**53, where an integer is exact in float64),
    so capture stores them without reading the request's Python values again."""

    X: np.ndarray
    unseen: dict[str, int]
    exact: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


class RequestDecoder:
    """Decodes V1 bodies and V2 inputs for one schema; at most ``max_batch`` rows per request."""

    def __init__(self, schema: FeatureSchema, max_batch: int = DEFAULT_MAX_BATCH):
        self.schema, self.max_batch = schema, max_batch
        self.names = schema.names
        self._name_set = frozenset(self.names)
        self._codes = {
            f.name: {c: float(i) for i, c in enumerate(f.categories)}
            for f in schema.features
            if f.kind == "categorical"
        }

    # -- V1 ------------------------------------------------------------------------------------

    def decode_v1(self, body: Any, raw: bytes | None = None) -> Decoded:
        """``{"instances": [...]}``: lists in schema order, or objects keyed by feature name. ``raw``: the
        JSON text ``body`` was parsed from, when at hand (it spares the all-numeric check a pass over
        every value)."""
        instances = _body_list(body, "instances")
        self._check_rows(len(instances), '"instances"')
        if isinstance(instances[0], dict):
            return self._decode_objects(instances)
        return self._decode_rows(instances, raw)

    def _decode_objects(self, instances: list) -> Decoded:
        """Objects keyed by feature name; checked in bulk first, one by one only to name a bad one."""
        if set(map(type, instances)) != {dict} or not all(
            map(operator.eq, map(dict.keys, instances), itertools.repeat(self._name_set))
        ):
            for i, instance in enumerate(instances):
                if type(instance) is not dict:
                    raise InvalidRequest(
                        f"instance {i}: expected an object keyed by feature name like instance 0 "
                        f"(all instances take the same form); got {_kind(instance)}"
                    )
                if instance.keys() != self._name_set:
                    self._raise_bad_names(f"instance {i}", instance.keys())
        columns = [list(map(operator.itemgetter(name), instances)) for name in self.names]
        return self._encode_columns(columns, len(instances))

    def _decode_rows(self, rows: list, raw: bytes | None = None) -> Decoded:
        """Lists in schema order; an all-numeric batch is one numpy conversion."""
        width = len(self.names)
        if not self._codes:
            exact = _float_matrix(rows, width)  # float64, then float32: as fast as float32 alone (reading the values)
            if exact is not None and exact.ndim == 2 and exact.shape[1] == width:
                magnitude = np.abs(exact)  # (comparisons with NaN do not warn; a cast past float32's range does)
                if (magnitude > _FLOAT32_MAX).any():
                    with np.errstate(over="ignore", invalid="ignore"):
                        X = exact.astype(np.float32)
                else:
                    X = exact.astype(np.float32)
                exact = None if (magnitude >= _EXACT).any() else exact
                if raw is not None and numbers_only(raw) and not (np.abs(X) >= _LARGE).any():
                    return Decoded(X, {}, exact)  # JSON numbers and nulls only, none large: the value rule holds
                if _plain_matrix(rows, X):
                    return Decoded(X, {}, exact)
        if not set(map(type, rows)) <= {list, tuple} or set(map(len, rows)) != {width}:
            for i, row in enumerate(rows):
                if type(row) not in (list, tuple):
                    raise InvalidRequest(
                        f"instance {i}: expected a list of {width} values in schema order like "
                        f"instance 0 (all instances take the same form); got {_kind(row)}"
                    )
                if len(row) != width:
                    raise InvalidRequest(f"instance {i} has {len(row)} values; expected {width} features {self.names}")
        columns = [list(map(operator.itemgetter(j), rows)) for j in range(width)]
        return self._encode_columns(columns, len(rows))

    # -- V2 ------------------------------------------------------------------------------------

    def decode_v2(self, body: Any) -> Decoded:
        """A V2 JSON request body (``{"inputs": [...]}``, as parsed)."""
        return self.decode_v2_inputs(v2_tensors(body))

    def decode_v2_inputs(self, inputs: Sequence[Tensor | tuple]) -> Decoded:
        """One numeric ``[n, n_features]`` tensor (all-numeric models only), or one input per feature."""
        inputs = [Tensor(*t) for t in inputs]
        if not inputs:
            raise InvalidRequest("request has no inputs")
        if len(inputs) == 1 and inputs[0].name not in self._name_set:
            return self._decode_v2_matrix(inputs[0])
        return self._decode_v2_columns(inputs)

    def _decode_v2_matrix(self, t: Tensor) -> Decoded:
        width = len(self.names)
        if self._codes:
            raise InvalidRequest(
                f"input {t.name!r} is not a feature name, and a single [n, {width}] tensor is accepted only "
                f"when every feature is numeric; this model has categorical features {sorted(self._codes)}: "
                f"send one input per feature, named {self.names}, with BYTES for categorical features"
            )
        _check_datatype(t, NUMERIC_DATATYPES, "a numeric datatype (FP32, FP64, INT*)")
        if len(t.shape) != 2 or t.shape[1] != width:
            raise InvalidRequest(
                f"input {t.name!r} has shape {list(t.shape)}; expected [n, {width}] "
                f"(one row per instance, features {self.names})"
            )
        self._check_rows(t.shape[0], f"input {t.name!r}")
        values = _numeric(f"input {t.name!r}", _flat(t), unit="value", datatype=t.datatype)
        if values.size != t.shape[0] * width:
            raise InvalidRequest(
                f"input {t.name!r} has {values.size} values; shape {list(t.shape)} needs {t.shape[0] * width}"
            )
        return Decoded(values.reshape(t.shape[0], width), {})

    def _decode_v2_columns(self, inputs: list[Tensor]) -> Decoded:
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise InvalidRequest(f"inputs repeat a name: {names}")
        if set(names) != self._name_set:
            self._raise_bad_names("inputs", names)
        first = inputs[0]
        n = first.shape[0] if len(first.shape) in (1, 2) else 0
        for t in inputs:
            if list(t.shape) not in ([n], [n, 1]):
                raise InvalidRequest(
                    f"input {t.name!r} has shape {list(t.shape)}; expected [n] or [n, 1] "
                    f"with the same n for every input (the first, {first.name!r}, has "
                    f"shape {list(first.shape)})"
                )
        self._check_rows(n, f"input {first.name!r}")
        columns = {t.name: self._column_values(t, n) for t in inputs}
        datatypes = {t.name: t.datatype for t in inputs}
        return self._encode_columns([columns[name] for name in self.names], n, [datatypes[n] for n in self.names])

    def _column_values(self, t: Tensor, n: int) -> list:
        if t.name in self._codes:
            _check_datatype(t, {"BYTES"}, f"BYTES (category strings) for categorical feature {t.name!r}")
        else:
            _check_datatype(
                t, NUMERIC_DATATYPES, f"a numeric datatype (FP32, FP64, INT*) for numeric feature {t.name!r}"
            )
        values = _flat(t)
        if len(values) != n:
            raise InvalidRequest(f"input {t.name!r} has {len(values)} values; shape {list(t.shape)} needs {n}")
        if t.datatype.upper() == "BYTES" and any(isinstance(v, bytes) for v in values):
            values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
        return values

    # -- columns (batch inference) ---------------------------------------------------------------

    def category_codes(self, name: str, values: Sequence) -> tuple[list[float], int]:
        """The codes of categorical feature ``name`` for ``values`` as a request's values are encoded
        (NaN for missing and unseen), and how many were unseen. Batch inference encodes each distinct
        value of a column once through here, so a file's rows are encoded exactly as served rows."""
        unseen: dict[str, int] = {}
        return _categories(name, self._codes[name], values, unseen), unseen.get(name, 0)

    # -- shared ----------------------------------------------------------------------------------

    def _check_rows(self, n: int, what: str) -> None:
        if n < 1:
            raise InvalidRequest(f"{what} is empty; send at least one row")
        if n > self.max_batch:
            raise InvalidRequest(
                f"{what} has {n} rows, over the limit of {self.max_batch} rows per request; split the batch"
            )

    def _raise_bad_names(self, where: str, got) -> None:
        got = set(got)
        unknown, missing = sorted(got - self._name_set), [n for n in self.names if n not in got]
        problems = ([f"unknown feature names {unknown}"] if unknown else []) + (
            [f"missing features {missing}"] if missing else []
        )
        raise InvalidRequest(f"{where}: {'; '.join(problems)}; the model's features are {self.names}")

    def _encode_columns(self, columns: Sequence[Sequence], n: int, datatypes: Sequence[str] | None = None) -> Decoded:
        X = np.empty((n, len(self.names)), dtype=np.float32)
        unseen: dict[str, int] = {}
        for j, (name, values) in enumerate(zip(self.names, columns)):
            codes = self._codes.get(name)
            if codes is None:
                X[:, j] = _numeric(f"feature {name!r}", values, datatype=datatypes[j] if datatypes else None)
            else:
                X[:, j] = _categories(name, codes, values, unseen)
        return Decoded(X, unseen)


def _numeric(what: str, values: Sequence, unit: str = "row", datatype: str | None = None) -> np.ndarray:
    """float32 values, each checked against the value rule (``check_values``); a value that breaks it
    or that numpy cannot convert is named in the error with its position."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        out = _as_float32(values)
        if out.ndim == 1 and (out.dtype.kind != "f" or not np.isinf(out).any()):
            return out
        return check_values(what, values.tolist(), unit, datatype, out)
    out = None
    try:
        out = _as_float32(values)
        if out.ndim != 1:
            out = None
    except (ValueError, TypeError, OverflowError):
        pass
    return check_values(what, values, unit, datatype, out)


def _as_float32(values: Any) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float32)


def check_values(
    what: str, values: Sequence, unit: str = "row", datatype: str | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """The value rule, one for every path that decodes a numeric feature (V1, V2 JSON on the fast path
    and on KServe's, V2 binary): a value is a number or null (missing). Refused, naming the field and
    the position: booleans; strings that are not finite numbers ("NaN", "Infinity", "-inf"; numeric
    strings such as "1.5" are numbers, as in training) and any string in a V2 tensor, whose
    ``datatype`` is numeric; infinities; numbers of magnitude 2**64 or more (beyond every 64-bit
    integer; float32 would hold them up to 3.4e38, and would turn 1e39 into an infinity, but JSON
    parsers disagree on them: orjson reads 2**64 as a float, Python's json as an int, so one bound
    for both keeps the fast path and KServe's alike); and, for a declared V2 ``datatype``, values
    that do not fit it: a fraction for INT*/UINT*, a value outside the integer type's range (UINT8
    -5), a value beyond FP16's range (1e6). ``out`` is the values already converted, when numpy
    could."""
    types = set(map(type, values))
    limits = _LIMITS.get(datatype.upper()) if datatype else None
    if out is not None and types <= _PLAIN and _fit(values, types, limits, out):
        return out
    for i, value in enumerate(values):
        problem = _value_problem(value, limits, datatype)
        if problem:
            raise InvalidRequest(f"{what} at {unit} {i}: {problem}; got {_shown(value)}")
    if out is None:
        raise InvalidRequest(f"{what}: expected numbers or null")
    return out


_PLAIN = frozenset({int, float, type(None)})
_EXACT = 2.0**53  # below it, float64 holds every integer (and every JSON fraction as parsed) exactly
_FLOAT32_MAX = float(np.finfo(np.float32).max)
MAGNITUDE_LIMIT = 2**64  # a numeric value's magnitude stays below it
_LARGE = np.float32(2**62)  # below it, no value breaks the magnitude limit
_LIMITS: dict[str, tuple[bool, float, float]] = {  # datatype: (integers only, lowest, highest)
    **{f"INT{b}": (True, -(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (True, 0, 2**b - 1) for b in (8, 16, 32, 64)},
    "FP16": (False, -float(np.finfo(np.float16).max), float(np.finfo(np.float16).max)),
    "FP32": (False, -_FLOAT32_MAX, _FLOAT32_MAX),
    "FP64": (False, -_FLOAT32_MAX, _FLOAT32_MAX),
}


def _fit(values: Sequence, types: set, limits: tuple[bool, float, float] | None, out: np.ndarray) -> bool:
    """Whether plain JSON numbers (and nulls) all keep the rule, checked in bulk (no value named)."""
    if (np.abs(out) >= _LARGE).any():  # an infinity or a large number: checked exactly
        if limits is not None or np.isinf(out).any():
            return False  # (floats are not exact there: the values are checked one by one)
        if max(abs(v) for v in values if v is not None) >= MAGNITUDE_LIMIT:
            return False
    if limits is None:
        return True
    integers, lowest, highest = limits
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    return not ((a < lowest).any() or (a > highest).any() or (integers and (a != np.floor(a)).any()))


def _value_problem(value: Any, limits: tuple[bool, float, float] | None, datatype: str | None) -> str | None:
    """Why one value breaks the value rule, or None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "expected a number or null, not a boolean"
    if isinstance(value, str):
        if datatype:
            return f"expected a number or null for datatype {datatype}, not a string"
        try:
            number = float(value)
        except ValueError:
            return "expected a number or null"
        if not math.isfinite(number):
            return "expected a finite number or null"
        value = number
    elif isinstance(value, (int, np.integer)):
        value = int(value)
    elif isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None  # missing, as null
        if math.isinf(value):
            return "expected a finite number or null"
    else:
        return "expected a number or null"
    if abs(value) >= MAGNITUDE_LIMIT:
        return "out of range: a number's magnitude must stay below 2**64 (1.8e19)"
    if limits is not None:
        integers, lowest, highest = limits
        if integers and value != math.floor(value):
            return f"not an integer, as datatype {datatype} needs"
        if not lowest <= value <= highest:
            return f"out of the range of datatype {datatype} ({lowest:g} to {highest:g})"
    return None


def _shown(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _categories(name: str, codes: dict[str, float], values: Sequence, unseen: dict[str, int]) -> list:
    """Category codes, or NaN for missing and unseen values (unseen are counted)."""
    try:
        out = [codes.get(v) for v in values]
    except TypeError:  # an unhashable value (list or object) somewhere
        out = [None] * len(values)
    if None not in out:
        return out
    for i, value in enumerate(values):
        if out[i] is None:
            out[i] = _category_code(name, codes, value, i, unseen)
    return out


def _category_code(name: str, codes: dict[str, float], value: Any, i: int, unseen: dict[str, int]) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, (list, dict)):
        raise InvalidRequest(f"feature {name!r} at row {i}: expected a category string or null; got {value!r}")
    code = codes.get(value if isinstance(value, str) else label_key(value))
    if code is None:
        unseen[name] = unseen.get(name, 0) + 1
        return math.nan
    return code


def _float_matrix(rows: list, width: int) -> np.ndarray | None:
    """The rows as one float64 matrix as numpy converts them, or None when it cannot. Rows that are all lists
    of ``width`` values are read as one flat iterator (~25% faster than ``asarray``'s nested discovery). No
    floating-point warning can come of it (Python numbers are doubles already; an int past a double's range
    raises), so no ``np.errstate`` (~2 us a request)."""
    if set(map(type, rows)) <= _ROW_TYPES and set(map(len, rows)) == {width}:
        try:
            values = itertools.chain.from_iterable(rows)
            return np.fromiter(values, np.float64, len(rows) * width).reshape(len(rows), width)
        except (ValueError, TypeError, OverflowError):  # a null (asarray makes it NaN) or a string
            pass
    try:
        return np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None


_ROW_TYPES = frozenset({list, tuple})


def _plain_matrix(rows: list, X: np.ndarray) -> bool:
    """Whether an all-numeric batch keeps the value rule as a whole (else it is checked per column,
    which names the bad value)."""
    values = list(itertools.chain.from_iterable(rows))
    return set(map(type, values)) <= _PLAIN and _fit(values, set(map(type, values)), None, X)


_NUMBER_BYTES = b"0123456789.,-+eE[] \t\r\n"  # what JSON numbers, lists and whitespace are written with
_ONLY_INSTANCES = b'{"instancs":}'  # {"instances": ...} without them (and without the e of its name)


def numbers_only(raw: bytes) -> bool:
    """Whether the JSON text ``raw`` (valid JSON: the body as parsed) is ``{"instances": ...}`` holding
    nothing but lists, numbers and nulls: no string (it would add quotes), no boolean, no object. One
    pass in C over the bytes, where checking the parsed values' types is a Python step per value."""
    return raw.translate(None, _NUMBER_BYTES).replace(b"null", b"") == _ONLY_INSTANCES


def is_number(value: Any) -> bool:
    """Whether numpy converts this one value to float32 (as it does for the whole column)."""
    if isinstance(value, (list, tuple, dict)):
        return False
    try:
        np.asarray(value, dtype=np.float32)
        return True
    except (ValueError, TypeError, OverflowError):
        return False


def _flat(t: Tensor) -> list | np.ndarray:  # for decoding: numeric ndarrays stay ndarrays
    """The tensor's values as one flat sequence (nested lists are flattened one level)."""
    data = t.data
    if isinstance(data, np.ndarray):
        return data.ravel() if data.dtype != object else data.ravel().tolist()
    if not isinstance(data, list):
        raise InvalidRequest(f"input {t.name!r}: data must be a list; got {_kind(data)}")
    if data and isinstance(data[0], list):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


def v2_tensors(body: Any) -> list[Tensor]:
    """The inputs of a V2 JSON request body, checked as the Open Inference Protocol's request schema
    (and KServe's pydantic model of it) checks them: each input an object with a string ``name``, an
    integer list ``shape``, a string ``datatype`` and ``data``."""
    inputs = _body_list(body, "inputs")
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidRequest(f'"id" must be a string; got {_kind(body["id"])}')
    return [_v2_tensor(i, t) for i, t in enumerate(inputs)]


def _body_list(body: Any, key: str) -> list:
    """``body[key]`` of a request body that must be a JSON object holding a list there."""
    if not isinstance(body, dict) or key not in body:
        got = "an object without it" if isinstance(body, dict) else _kind(body)
        raise InvalidRequest(f'request body must be a JSON object with an "{key}" list; got {got}')
    if not isinstance(body[key], list):
        raise InvalidRequest(f'"{key}" must be a list; got {_kind(body[key])}')
    return body[key]


def _v2_tensor(i: int, t: Any) -> Tensor:
    if not isinstance(t, dict):
        raise InvalidRequest(f"inputs[{i}] must be an object with name, shape, datatype and data; got {_kind(t)}")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in t]
    if missing:
        raise InvalidRequest(
            f"inputs[{i}] has no {', '.join(missing)}; each input needs name, shape, datatype and data"
        )
    name, shape, datatype = t["name"], t["shape"], t["datatype"]
    if not isinstance(name, str) or not isinstance(datatype, str):
        field, value = ("name", name) if not isinstance(name, str) else ("datatype", datatype)
        raise InvalidRequest(f"inputs[{i}].{field} must be a string; got {_kind(value)}")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise InvalidRequest(f"input {name!r}: shape must be a list of integers; got {shape!r}")
    return Tensor(name, shape, datatype, t["data"])


def _check_datatype(t: Tensor, allowed, expected: str) -> None:
    if t.datatype.upper() not in allowed:
        raise InvalidRequest(f"input {t.name!r} has datatype {t.datatype}; expected {expected}")


_KINDS = {dict: "an object", list: "a list", str: "a string", type(None): "null"}


def _kind(value: Any) -> str:
    """How a JSON value is named in error messages."""
    return _KINDS.get(type(value), type(value).__name__)


# -- rows by feature name ------------------------------------------------------------------------------


def v1_rows(body: dict, names: Sequence[str]) -> list[dict]:
    """Feature values by name, per instance of a V1 body that ``RequestDecoder`` accepted (lists in
    schema order, or objects)."""
    instances = body["instances"]
    if isinstance(instances[0], dict):
        return instances
    return [dict(zip(names, row)) for row in instances]


def v2_rows(tensors: Sequence[Tensor], names: Sequence[str]) -> list[dict]:
    """Feature values by name, per row of V2 inputs that ``RequestDecoder`` accepted: one input per
    feature, or one ``[n, k]`` tensor."""
    if len(tensors) == 1 and tensors[0].name not in names:
        values = plain_values(tensors[0].data)
        width = len(names)
        return [dict(zip(names, values[i : i + width])) for i in range(0, len(values), width)]
    columns = {t.name: plain_values(t.data) for t in tensors}
    return [dict(zip(names, row)) for row in zip(*(columns[name] for name in names))]


# -- requests in the other protocol ----------------------------------------------------------------


def request_in(protocol: str, decoded: Decoded, schema: FeatureSchema, request_id: str) -> dict:
    """The request on ``protocol`` ("v1" or "v2") for the rows of ``decoded``."""
    return v1_request(decoded, schema) if protocol == "v1" else v2_request(decoded, schema, request_id)


def v1_request(decoded: Decoded, schema: FeatureSchema) -> dict:
    """``{"instances": [...]}`` in schema order from the decoded matrix (missing/unseen as null)."""
    return {"instances": [list(row) for row in zip(*_columns(decoded, schema))]}


def v2_request(decoded: Decoded, schema: FeatureSchema, request_id: str) -> dict:
    """V2 inputs, one per feature (BYTES for categorical, FP64 for numeric), from the decoded matrix."""
    inputs = [
        {
            "name": f.name,
            "shape": [decoded.n_rows],
            "datatype": "BYTES" if f.kind == "categorical" else "FP64",
            "data": column,
        }
        for f, column in zip(schema.features, _columns(decoded, schema))
    ]
    return {"id": request_id, "inputs": inputs}


def _columns(decoded: Decoded, schema: FeatureSchema) -> list[list]:
    """Each feature's values: numbers, category names, None for missing (float32 round-trips exactly)."""
    columns = []
    for j, feature in enumerate(schema.features):
        values = decoded.X[:, j].tolist()
        if feature.kind == "categorical":
            categories = feature.categories
            columns.append([None if v != v else categories[int(v)] for v in values])
        else:
            columns.append([None if v != v else v for v in values])
    return columns


# -- V2 binary bodies (the binary tensor extension) --------------------------------------------------

BINARY_ITEM_BYTES = {
    "BOOL": 1,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "FP16": 2,
    "INT32": 4,
    "UINT32": 4,
    "FP32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP64": 8,
}


def check_binary_request(body: bytes, json_length: str | None) -> None:
    """InvalidRequest naming what is wrong with a V2 body in the binary tensor extension (the JSON
    header of ``json_length`` bytes, the ``inference-header-content-length`` value, then each input's
    ``binary_data_size`` bytes), before a parser trusts it: a length that is not a byte count or runs
    past the body, a JSON header that is not a V2 request, a ``binary_data_size`` that is not a byte
    count, sizes that do not add up to the body, a fixed-size tensor whose size is not its shape's,
    and a BYTES element whose 4-byte length prefix runs past its input (a prefix of 1e9)."""
    text = (json_length or "").strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidRequest(
            f"inference-header-content-length {json_length!r} is not a byte count (a non-negative integer)"
        )
    header_size = int(text)
    if header_size > len(body):
        raise InvalidRequest(f"inference-header-content-length {header_size} is more than the body's {len(body)} bytes")
    try:
        doc = json.loads(body[:header_size])
    except (ValueError, RecursionError) as e:
        raise InvalidRequest(
            f"the JSON header of the binary body (its first {header_size} bytes) is not JSON: {e}"
        ) from None
    tensors = _body_list(doc, "inputs")
    offset = header_size
    for i, t in enumerate(tensors):
        if not isinstance(t, dict):
            raise InvalidRequest(f"inputs[{i}] must be an object; got {_kind(t)}")
        parameters = t.get("parameters")
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name, size = t.get("name"), parameters["binary_data_size"]
        if type(size) is not int or size < 0:
            raise InvalidRequest(f"input {name!r}: binary_data_size {size!r} is not a byte count")
        if offset + size > len(body):
            raise InvalidRequest(
                f"input {name!r}: binary_data_size {size} runs past the body ({len(body) - offset} bytes left)"
            )
        _check_binary_tensor(name, t.get("datatype"), t.get("shape"), body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise InvalidRequest(
            f"the binary body has {len(body) - offset} bytes after its inputs' binary_data_size "
            f"({len(body)} bytes in all, {header_size} of JSON header)"
        )


def _check_binary_tensor(name: Any, datatype: Any, shape: Any, data: bytes) -> None:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidRequest(f"input {name!r}: shape must be a list of non-negative integers; got {shape!r}")
    count = math.prod(shape)
    kind = datatype.upper() if isinstance(datatype, str) else datatype
    if kind == "BYTES":
        position, elements = 0, 0
        while position < len(data):
            if position + 4 > len(data):
                raise InvalidRequest(f"input {name!r}: a BYTES element's 4-byte length prefix is cut off")
            length = int.from_bytes(data[position : position + 4], "little")
            position += 4
            if position + length > len(data):
                raise InvalidRequest(
                    f"input {name!r}: a BYTES element's length prefix {length} runs past the input's {len(data)} bytes"
                )
            position, elements = position + length, elements + 1
        if elements != count:
            raise InvalidRequest(f"input {name!r} has {elements} BYTES elements; shape {shape} needs {count}")
        return
    item = BINARY_ITEM_BYTES.get(kind)
    if item is None:
        raise InvalidRequest(f"input {name!r} has datatype {datatype!r}; expected a V2 datatype")
    if len(data) != count * item:
        raise InvalidRequest(
            f"input {name!r}: binary_data_size {len(data)} does not fit shape {shape} of {kind} ({count * item} bytes)"
        )
