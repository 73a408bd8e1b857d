"""Image-text datasets as img2dataset writes them (CC3M, CC12M, LAION), and as the hub republishes them in Parquet.

`write_img2dataset_webdataset` follows img2dataset's `--output_format webdataset`:

- one tar per shard, named by the shard id with 5 digits (`00000.tar`); each successful sample is three consecutive
  members `<key>.jpg` (re-encoded at the resize size), `<key>.txt` (the caption) and `<key>.json`; the key is the
  shard id followed by the sample's index in the shard padded to the digits of `number_sample_per_shard`
  (`000010003`: shard 1, sample 3); samples that failed to download are not in the tar;
- beside each tar, `<shard>.parquet` with one row per input sample, failures included (url, caption, key, status,
  error_message, width, height, original_width, original_height, exif, sha256), and `<shard>_stats.json`
  (count, successes, failed_to_download, failed_to_resize, duration, start_time, end_time, status_dict).

`write_caption_parquet` writes the same samples as a hub Parquet file (HF `datasets` features metadata, the image
as an `Image` struct `{bytes, path}`, the caption beside it), as `RIW/small_coco`-style repositories do.

Quirks included when `bad_rows`: a sample whose JPEG is cut short, one with an empty caption, and two inputs that
failed to download (in the Parquet and stats only).
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import CAPTIONS, PHOTOS, camera_frames

TRUNCATED, EMPTY_CAPTION, FAILED = "truncated-jpeg", "empty-caption", "failed-download"
_META_SCHEMA = pa.schema([
    ("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("original_width", pa.int64()),
    ("original_height", pa.int64()), ("exif", pa.string()), ("sha256", pa.string()),
])


def sample_kinds(n: int, bad_rows: bool) -> list[str]:
    """The kind of each input sample: "good", or one of the quirks (samples 2, 4, 6 and 7 when `bad_rows`)."""
    bad = {2: TRUNCATED, 4: EMPTY_CAPTION, 6: FAILED, 7: FAILED} if bad_rows else {}
    return [bad.get(i, "good") for i in range(n)]


def _sample(index: int, size: tuple[int, int]) -> tuple[bytes, str]:
    photo = index % len(PHOTOS)
    frame = np.ascontiguousarray(camera_frames(photo, 12, *size)[(index // len(PHOTOS)) % 12])
    return encode_jpeg(frame, FrameConfig(quality=90)), CAPTIONS[PHOTOS[photo]]


def _meta(key: str, index: int, caption: str, kind: str, jpeg: bytes, size: tuple[int, int]) -> dict:
    failed = kind == FAILED
    return {"url": f"https://images.example.com/cc/{index:07d}.jpg", "caption": caption, "key": key,
            "status": "failed_to_download" if failed else "success",
            "error_message": "Max retries exceeded with url" if failed else None,
            "width": None if failed else size[1], "height": None if failed else size[0],
            "original_width": None if failed else 2 * size[1], "original_height": None if failed else 2 * size[0],
            "exif": None if failed else "{}", "sha256": None if failed else hashlib.sha256(jpeg).hexdigest()}


def write_img2dataset_webdataset(directory: str | pathlib.Path, *, n_shards: int = 2, per_shard: int = 8,
                                 bad_rows: bool = True, image_size: tuple[int, int] = (96, 128),
                                 number_sample_per_shard: int = 10000) -> pathlib.Path:
    """img2dataset's webdataset output under `directory`; returns it."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digits = len(str(number_sample_per_shard - 1))
    for shard in range(n_shards):
        rows, members = [], []
        kinds = sample_kinds(per_shard, bad_rows and shard == 0)
        for index, kind in enumerate(kinds):
            key = f"{shard:05d}{index:0{digits}d}"
            jpeg, caption = _sample(shard * per_shard + index, image_size)
            caption = "" if kind == EMPTY_CAPTION else caption
            meta = _meta(key, shard * per_shard + index, caption, kind, jpeg, image_size)
            rows.append(meta)
            if kind == FAILED:
                continue
            stored = jpeg[: len(jpeg) // 2] if kind == TRUNCATED else jpeg
            members += [(f"{key}.jpg", stored), (f"{key}.txt", caption.encode()),
                        (f"{key}.json", json.dumps(meta).encode())]
        _write_tar(directory / f"{shard:05d}.tar", members)
        pq.write_table(pa.Table.from_pylist(rows, schema=_META_SCHEMA), directory / f"{shard:05d}.parquet")
        successes = sum(r["status"] == "success" for r in rows)
        stats = {"count": len(rows), "successes": successes, "failed_to_download": len(rows) - successes,
                 "failed_to_resize": 0, "duration": 1.5, "start_time": 1700000000.0, "end_time": 1700000001.5,
                 "status_dict": {"success": successes, **({"Max retries exceeded with url": len(rows) - successes}
                                                          if len(rows) > successes else {})}}
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return directory


def _write_tar(path: pathlib.Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o444
            tar.addfile(info, io.BytesIO(data))


def write_caption_parquet(path: str | pathlib.Path, *, n_rows: int = 8, bad_rows: bool = True,
                          image_size: tuple[int, int] = (96, 128)) -> pathlib.Path:
    """A hub Parquet file of image-caption pairs (img2dataset's columns, the image embedded); returns it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for index, kind in enumerate(sample_kinds(n_rows, bad_rows)):
        jpeg, caption = _sample(index, image_size)
        caption = "" if kind == EMPTY_CAPTION else caption
        meta = _meta(f"{index:09d}", index, caption, kind, jpeg, image_size)
        image = None if kind == FAILED else {"bytes": jpeg[: len(jpeg) // 2] if kind == TRUNCATED else jpeg,
                                             "path": f"{index:09d}.jpg"}
        records.append({"image": image, **meta})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), *_META_SCHEMA], metadata={b"huggingface": json.dumps({"info": {
        "features": {"image": {"_type": "Image"}, **{f.name: {"dtype": _dtype(f.type), "_type": "Value"}
                                                     for f in _META_SCHEMA}}}}).encode()})
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path, row_group_size=4)
    return path


def _dtype(arrow_type: pa.DataType) -> str:
    return "int64" if pa.types.is_integer(arrow_type) else "string"
