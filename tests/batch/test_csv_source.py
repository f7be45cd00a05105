"""CSV input: the numeric features parsed as numbers while they parse, the rest of the file read again as
text from the first row not yet yielded when one does not (so the encoder can set that row aside)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from kfloop.batch.source import BatchInput


def _source(tmp_path, frame: pd.DataFrame, chunk_rows: int) -> BatchInput:
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    source = BatchInput(path, "csv", path.as_uri(), chunk_rows)
    source.numeric_columns = {"tenure", "charges"}
    source.block_size = 4096  # many blocks: the bad value is met after chunks were yielded
    return source


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"tenure": range(n), "charges": [i * 0.25 for i in range(n)], "plan": ["a", "b"] * (n // 2)})


def test_numbers_are_parsed_as_numbers_when_they_all_parse(tmp_path):
    chunks = list(_source(tmp_path, _frame(2000), 500).chunks())
    assert [c.num_rows for c in chunks] == [500] * 4
    assert {c.schema.field("tenure").type for c in chunks} == {pa.float64()}
    assert chunks[0].schema.field("plan").type == pa.string()
    assert pa.concat_tables(chunks).column("charges").to_pylist() == [i * 0.25 for i in range(2000)]


def test_a_value_that_is_not_a_number_turns_the_rest_of_the_file_into_text_without_losing_a_row(tmp_path):
    frame = _frame(2000).astype({"tenure": object})
    frame.loc[1700, "tenure"] = "about ten"
    chunks = list(_source(tmp_path, frame, 500).chunks())
    assert sum(c.num_rows for c in chunks) == 2000 and chunks[0].schema.field("tenure").type == pa.float64()
    assert chunks[-1].schema.field("tenure").type == pa.string()  # read again as text from the first row not yielded
    values = [v for c in chunks for v in c.column("tenure").to_pylist()]  # numbers, then text
    assert values[1700] == "about ten" and isinstance(values[0], float) and isinstance(values[-1], str)
    assert [float(v) for i, v in enumerate(values) if i != 1700] == [float(i) for i in range(2000) if i != 1700]
