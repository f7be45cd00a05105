"""Model bundles: every file is checked against the manifest before use."""

import pytest

from kfloop.errors import ChecksumError
from kfloop.store import bundle


@pytest.fixture
def root(tmp_path):
    (tmp_path / "model.ubj").write_bytes(b"model")
    (tmp_path / "drift").mkdir()
    (tmp_path / "drift" / "x_ref.npy").write_bytes(b"ref")
    bundle.write_manifest(tmp_path)
    return tmp_path


def test_a_fresh_bundle_verifies(root):
    assert set(bundle.verify_bundle(root)["files"]) == {"model.ubj", "drift/x_ref.npy"}


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: (r / "model.ubj").write_bytes(b"other"), "checksum mismatch"),
        (lambda r: (r / "drift" / "x_ref.npy").unlink(), "missing"),
        (lambda r: (r / "extra.bin").write_bytes(b"x"), "not in its manifest"),
        (lambda r: (r / bundle.MANIFEST).unlink(), "not a kfloop model bundle"),
    ],
)
def test_changes_are_detected(root, change, message):
    change(root)
    with pytest.raises(ChecksumError, match=message):
        bundle.verify_bundle(root)
