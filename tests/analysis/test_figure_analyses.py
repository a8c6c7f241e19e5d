"""The attention and saliency analyses as runs use them: through run_analyses and mmexp-eval."""

from __future__ import annotations

import json

import pytest

from mmexp.analysis.attention import AttentionAnalysis
from mmexp.analysis.run import run_analyses
from mmexp.analysis.saliency import SaliencyAnalysis
from tests.helpers.analysis_sets import SamplesDataModule, tiny_classifier
from tests.helpers.cli import run_cli


def test_run_analyses_gives_the_components_the_samples_and_the_folder(tmp_path) -> None:
    module = tiny_classifier("cross_attention")
    components = {"attention": AttentionAnalysis(), "saliency": SaliencyAnalysis()}
    settings = {"max_samples": 6, "seed": 0, "batch_size": 8}
    datamodule = SamplesDataModule(module, count=9)
    payload = run_analyses(module, datamodule, components, tmp_path, "ckpt", settings)
    written = json.loads((tmp_path / "analysis.json").read_text())
    assert written["components"].keys() == {"attention", "saliency"}
    assert payload["set"] == {"n": 6, "total": 9, "seed": 0}
    chosen = {s["index"] for s in written["components"]["attention"]["samples"]}
    assert len(chosen) == 4 and chosen <= set(range(9))
    for name in ("attention", "saliency"):
        figures = written["components"][name]["figures"]
        assert sorted(p.name for p in (tmp_path / "analysis" / name).iterdir()) == sorted(
            f.rsplit("/", 1)[1] for f in figures
        )


@pytest.mark.slow
def test_eval_writes_attention_and_saliency_figures_in_the_run_folder(tmp_path, data_dir) -> None:
    from tests.helpers.tiny_runs import train_tiny

    folder = tmp_path / "run"
    record = train_tiny(folder, data_dir, "fusion=cross_attention")
    run_cli(
        "eval",
        f"ckpt_path={record['best_checkpoint']}",
        "analysis=[attention,saliency]",
        "analysis_set.max_samples=20",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    components = json.loads((folder / "analysis.json").read_text())["components"]
    for name in ("attention", "saliency"):
        figures = components[name]["figures"]
        assert len(figures) == 4
        assert all((folder / figure).is_file() for figure in figures)
        assert all(figure.startswith(f"analysis/{name}/") for figure in figures)
        # shapes manifests carry the caption
        assert all(sample["caption"] for sample in components[name]["samples"])
