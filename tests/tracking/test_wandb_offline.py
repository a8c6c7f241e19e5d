import struct

import pytest
from wandb.proto import wandb_internal_pb2

from tests.helpers.wandb_offline import BLOCK_SIZE, HEADER, read_offline_run, read_records


def chunk(kind: int, body: bytes) -> bytes:
    return struct.pack("<IHB", 0, len(body), kind) + body


def history_record(step: int, value: float) -> bytes:
    record = wandb_internal_pb2.Record()
    item = record.history.item.add()
    item.key, item.value_json = "val/acc", str(value)
    step_item = record.history.item.add()
    step_item.key, step_item.value_json = "_step", str(step)
    return record.SerializeToString()


def test_records_split_across_blocks_are_reassembled(tmp_path):
    big = wandb_internal_pb2.Record()
    entry = big.config.update.add()
    entry.key, entry.value_json = "notes", '"' + "x" * (BLOCK_SIZE + 100) + '"'
    payload = big.SerializeToString()
    first = BLOCK_SIZE - len(HEADER) - 7
    middle = BLOCK_SIZE - 7
    data = HEADER + chunk(2, payload[:first]) + chunk(3, payload[first : first + middle])
    data += chunk(4, payload[first + middle :])
    padding = BLOCK_SIZE - len(data) % BLOCK_SIZE
    data += chunk(1, history_record(0, 0.5)) if padding >= 7 else b""
    path = tmp_path / "run-abc.wandb"
    path.write_bytes(data)
    records = list(read_records(path))
    assert records[0].config.update[0].value_json == entry.value_json
    assert read_offline_run(path)["history"] == [{"val/acc": 0.5, "_step": 0}]


def test_rejects_files_that_are_not_wandb_logs(tmp_path):
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(read_records(path))
    with pytest.raises(FileNotFoundError, match="no run-"):
        read_offline_run(tmp_path / "empty")
