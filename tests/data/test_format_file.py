"""The metadata files of argen's on-disk formats (tar shards, token caches): one reader, clear errors."""
import json

import pytest

from argen.data import shards, token_cache
from argen.errors import DataError

READERS = [(shards.read_manifest, shards.MANIFEST, shards.FORMAT, shards.VERSION, "shard directory"),
           (token_cache.read_meta, token_cache.META, token_cache.FORMAT, token_cache.VERSION, "token cache")]


@pytest.mark.parametrize("read, name, fmt, version, what", READERS)
def test_reads_a_valid_file(tmp_path, read, name, fmt, version, what):
    (tmp_path / name).write_text(json.dumps({"format": fmt, "version": version, "x": 1}))
    assert read(tmp_path)["x"] == 1


@pytest.mark.parametrize("read, name, fmt, version, what", READERS)
@pytest.mark.parametrize("content, message", [
    (None, "is not a {what}"),
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe\x00", "is not valid JSON"),
    (b"[1, 2]", "was not written by argen"),
    (json.dumps({"format": "other"}).encode(), "was not written by argen"),
])
def test_bad_files_say_what_is_wrong(tmp_path, read, name, fmt, version, what, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message.format(what=what)):
        read(tmp_path)


@pytest.mark.parametrize("read, name, fmt, version, what", READERS)
def test_newer_version_asks_for_an_upgrade(tmp_path, read, name, fmt, version, what):
    (tmp_path / name).write_text(json.dumps({"format": fmt, "version": version + 1}))
    with pytest.raises(DataError, match="newer than this argen.*upgrade argen"):
        read(tmp_path)
