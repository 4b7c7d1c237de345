"""Datasets and images that would hang, exhaust memory or crash a reader (issue 16): one clear
line each, before anything is sent."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from autotune.errors import UserError
from autotune.load import dataset
from autotune.load.dataset import file_sha256, read_rows
from autotune.load.images import image_file_data_url
from autotune.load.workload import Workload


def _png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` pixels (Pillow checks the size on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_no_dataset(device: str) -> None:
    for read in (read_rows, file_sha256):
        with pytest.raises(UserError, match="not a regular file"):
            read(Path(device))


def test_a_fifo_is_no_dataset(tmp_path: Path) -> None:
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    with pytest.raises(UserError, match="not a regular file"):
        Workload(dataset=fifo).validate()


def test_size_and_line_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "a" * 500}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    assert len(read_rows(path)) == 2
    monkeypatch.setattr(dataset, "MAX_LINE_BYTES", 100)
    with pytest.raises(UserError, match=r"line 1: longer than"):
        read_rows(path)
    monkeypatch.setattr(dataset, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(dataset, "MAX_DATASET_BYTES", 200)
    with pytest.raises(UserError, match="is larger than"):
        read_rows(path)
    with pytest.raises(UserError, match="is larger than"):
        file_sha256(path)


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    with pytest.raises(UserError, match="line 1: not valid JSON"):
        read_rows(path)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_png(20_000, 20_000), "too large to decode"),  # DecompressionBombError
        (_png(10_000, 10_000), "too large to decode"),  # DecompressionBombWarning
        (b"\x89PNG\r\n\x1a\n" + b"junk" * 10, "cannot read image"),
        (_png(0, 0), "cannot read image"),
    ],
)
def test_hostile_images(data: bytes, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(data)
    with pytest.raises(UserError, match=needle) as err:
        image_file_data_url(path, where="dataset d, line 3")
    assert str(err.value).startswith("dataset d, line 3: ") and "\n" not in str(err.value)


def test_a_small_image_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(path)
    assert image_file_data_url(path, where="w").startswith("data:image/png;base64,")


def test_an_image_that_is_a_device(tmp_path: Path) -> None:
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(UserError, match="not a regular file"):
        image_file_data_url(tmp_path / "zero.png", where="w")
