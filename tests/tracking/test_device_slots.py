"""Device slots: parallel multirun jobs share the GPUs, one job per slot at a time."""

import json
import multiprocessing
import os
import signal
import time

import pytest
from omegaconf import OmegaConf

from mmexp.tracking import device_slots, sweep_jobs
from mmexp.tracking.device_slots import hold_slot, lock_folder, placed_on_slot, slot_order
from mmexp.tracking.sweep_jobs import finished_result, run_job

FORK = multiprocessing.get_context("fork")


@pytest.fixture(autouse=True)
def _no_previous_gpu(monkeypatch):
    # which GPU this process's last job took; each test starts as a fresh worker
    monkeypatch.setattr(device_slots, "_last_gpu", {})


def hold_and_record(folder, gpus, jobs_per_gpu, hold_s, records):
    with hold_slot(folder, gpus, jobs_per_gpu, poll_s=0.02) as (gpu, slot):
        start = time.monotonic()
        time.sleep(hold_s)
        records.put((gpu, slot, start, time.monotonic()))


def run_jobs(folder, gpus, jobs_per_gpu, jobs, hold_s=0.3):
    records = FORK.Queue()
    workers = [
        FORK.Process(target=hold_and_record, args=(folder, gpus, jobs_per_gpu, hold_s, records))
        for _ in range(jobs)
    ]
    for worker in workers:
        worker.start()
    held = [records.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return held


def most_at_once(intervals):
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_slots_go_one_per_gpu_before_a_second_on_any():
    assert slot_order([0, 1], 2) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert slot_order([3], 1) == [(3, 0)]
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        slot_order([0], 0)
    with pytest.raises(ValueError, match="device_slots.gpus"):
        slot_order([], 1)


def test_four_jobs_on_two_gpus_never_share_one(tmp_path):
    held = run_jobs(tmp_path, [0, 1], 1, jobs=4)
    assert sorted(gpu for gpu, *_ in held) == [0, 0, 1, 1]
    for gpu in (0, 1):
        on_gpu = [(start, end) for g, _, start, end in held if g == gpu]
        assert most_at_once(on_gpu) == 1, on_gpu
    assert most_at_once([(start, end) for *_, start, end in held]) == 2


def test_two_jobs_per_gpu_run_together_on_one_gpu(tmp_path):
    held = run_jobs(tmp_path, [0], 2, jobs=4, hold_s=0.5)
    assert {gpu for gpu, *_ in held} == {0}
    assert sorted(slot for _, slot, *_ in held) == [0, 0, 1, 1]
    assert most_at_once([(start, end) for *_, start, end in held]) == 2


def hold_forever(folder):
    with hold_slot(folder, [0], 1):
        time.sleep(600)


def test_a_killed_job_frees_its_slot(tmp_path):
    worker = FORK.Process(target=hold_forever, args=(tmp_path,))
    worker.start()
    lock = tmp_path / "gpu0.slot0.lock"
    deadline = time.monotonic() + 30
    while not (lock.is_file() and lock.read_text().strip() == str(worker.pid)):
        assert time.monotonic() < deadline, "the worker never took the slot"
        time.sleep(0.02)
    waits = []
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=30)
    with hold_slot(tmp_path, [0], 1, poll_s=0.02, on_wait=lambda: waits.append(1)) as held:
        assert held == (0, 0)
    assert waits == []  # free at once, not after a timeout
    assert lock.read_text().strip() == str(os.getpid())


def job_config(tmp_path, **trainer):
    return OmegaConf.create(
        {
            "paths": {"output_dir": str(tmp_path / "job")},
            "device_slots": {
                "gpus": None,
                "jobs_per_gpu": 1,
                "lock_dir": str(tmp_path / "locks"),
            },
            "trainer": {"accelerator": "auto", "devices": 1, **trainer},
        }
    )


def test_a_job_trains_on_its_slots_gpu_and_the_config_it_came_from_is_unchanged(tmp_path):
    cfg = job_config(tmp_path)
    with (
        placed_on_slot(cfg, cuda_devices=2) as first,
        placed_on_slot(cfg, cuda_devices=2) as second,
    ):
        assert list(first.trainer.devices) == [0]
        assert list(second.trainer.devices) == [1]
    assert cfg.trainer.devices == 1
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
        "gpu0.slot0.lock",
        "gpu1.slot0.lock",
    ]
    named = job_config(tmp_path)
    named.device_slots.gpus = [1]
    with placed_on_slot(named, cuda_devices=2) as placed:
        assert list(placed.trainer.devices) == [1]


@pytest.mark.parametrize(
    ("cuda_devices", "trainer"),
    [(0, {}), (2, {"accelerator": "cpu"})],
    ids=["no-cuda", "cpu-accelerator"],
)
def test_jobs_that_would_not_run_on_a_gpu_are_left_as_they_are(tmp_path, cuda_devices, trainer):
    cfg = job_config(tmp_path, **trainer)
    with placed_on_slot(cfg, cuda_devices) as placed:
        assert placed is cfg
    assert not (tmp_path / "locks").exists()


def test_multi_gpu_jobs_and_invisible_gpus_are_refused_by_key(tmp_path):
    with (
        pytest.raises(ValueError, match=r"trainer.devices=2"),
        placed_on_slot(job_config(tmp_path, devices=2), cuda_devices=2),
    ):
        pass
    cfg = job_config(tmp_path)
    cfg.device_slots.gpus = [0, 5]
    with (
        pytest.raises(ValueError, match=r"device_slots.gpus names \[5\].*2 GPUs"),
        placed_on_slot(cfg, cuda_devices=2),
    ):
        pass


def test_a_job_done_on_a_slots_gpu_is_skipped_when_rerun_with_or_without_the_launcher(
    tmp_path,
):
    cfg = job_config(tmp_path)
    with (
        placed_on_slot(cfg, cuda_devices=2) as first,
        placed_on_slot(cfg, cuda_devices=2) as saved,
    ):
        pass
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    OmegaConf.save(saved, folder / "config.yaml")
    assert list(first.trainer.devices) == [0]
    assert finished_result(cfg) is not None
    alone = job_config(tmp_path)
    alone.device_slots = None
    assert finished_result(alone) is not None
    # what the job computes still counts: another device count is another job
    assert finished_result(job_config(tmp_path, devices=2)) is None
    assert finished_result(job_config(tmp_path, precision="bf16-mixed")) is None


def test_a_worker_goes_back_to_the_gpu_of_its_previous_job(tmp_path):
    # a reused worker holds a CUDA context on each GPU it has used: it keeps to one
    cfg = job_config(tmp_path)
    cfg.device_slots.gpus = [1]
    with placed_on_slot(cfg, cuda_devices=2) as placed:
        assert list(placed.trainer.devices) == [1]
    with placed_on_slot(job_config(tmp_path), cuda_devices=2) as placed:
        assert list(placed.trainer.devices) == [1]  # GPU 0 is free, but 1 comes first


def test_the_slots_are_shared_by_every_sweep_of_the_machine(tmp_path):
    settings = OmegaConf.create({"gpus": None, "jobs_per_gpu": 1, "lock_dir": None})
    assert lock_folder(settings).name.startswith("mmexp-device-slots-")
    settings.lock_dir = str(tmp_path)
    assert lock_folder(settings) == tmp_path


def test_a_config_the_slots_cannot_place_stops_the_sweep_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_jobs, "in_multirun", lambda: True)
    monkeypatch.setattr(sweep_jobs, "_cuda_devices", lambda: 2)
    ran = []
    with pytest.raises(ValueError, match=r"trainer.devices=2"):
        run_job(job_config(tmp_path, devices=2), lambda cfg: ran.append(cfg) or {})
    assert ran == []  # not recorded as a failed job with NaN: the sweep stops on it
