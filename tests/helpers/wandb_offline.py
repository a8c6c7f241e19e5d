"""Read an offline W&B run file (``run-<id>.wandb``) back without the W&B service.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic ``0xBEE1``, version)
followed by LevelDB-log-format blocks of 32 KiB holding protobuf ``Record`` messages. Being
able to read it locally is what lets tests check what was logged.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
RECORD_HEADER = 7  # crc32 (4), length (2), chunk type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes, path: Path) -> Iterator[bytes]:
    """Reassemble the records split over LevelDB log blocks."""
    offset, pending = len(HEADER), b""
    while offset + RECORD_HEADER <= len(data):
        room = BLOCK_SIZE - offset % BLOCK_SIZE
        if room < RECORD_HEADER:  # the block's tail is zero padding
            offset += room
            continue
        length, kind = struct.unpack_from("<HB", data, offset + 4)
        if kind == 0 and length == 0:  # zero-filled preallocated space: end of log
            break
        body = data[offset + RECORD_HEADER : offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
            pending = b""
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {offset}")


def read_records(path: str | Path) -> Iterator[wandb_internal_pb2.Record]:
    """Yield the protobuf records of a ``.wandb`` file in the order they were written."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path} is not a W&B transaction log (bad header)")
    for chunk in _chunks(data, path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Config, metric history, summary and run metadata of an offline run folder.

    Args:
        run_dir: An ``offline-run-*`` folder, or the ``.wandb`` file itself.

    Returns:
        ``{"run", "config", "history", "summary", "artifacts"}``: run metadata, config,
        one dict per logged step, the final summary and the logged artifacts.
    """
    run_dir = Path(run_dir)
    files = [run_dir] if run_dir.is_file() else sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    result: dict[str, Any] = {
        "run": {},
        "config": {},
        "history": [],
        "summary": {},
        "artifacts": [],
    }
    for record in read_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            result["run"] = {
                "id": run.run_id,
                "project": run.project,
                "group": run.run_group,
                "job_type": run.job_type,
                "name": run.display_name,
                "tags": list(run.tags),
            }
            # the config given to wandb.init comes with the run record
            for item in run.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            result["history"].append(
                {_key(item): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "artifact":
            artifact = record.artifact
            result["artifacts"].append(
                {
                    "type": artifact.type,
                    "name": artifact.name,
                    "aliases": list(artifact.aliases),
                    "files": [entry.path for entry in artifact.manifest.contents],
                }
            )
        elif kind == "summary":
            for item in record.summary.update:
                result["summary"][_key(item)] = json.loads(item.value_json)
    return result
