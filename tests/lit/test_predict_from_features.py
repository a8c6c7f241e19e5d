"""Classifiers score encoder outputs already computed, as evaluation modes need."""

import torch

from mmexp.builders import build_module, encoder_processors, instantiate_datamodule


def test_predictions_from_encoder_outputs_equal_the_forward_pass(make_train_cfg):
    import dataclasses

    for objective in ("classify", "regression"):
        cfg = make_train_cfg(f"objective={objective}")
        module = build_module(cfg, num_classes=3).eval()
        datamodule = instantiate_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.set_processors(*encoder_processors(module))
        datamodule.setup("test")
        batch = next(iter(datamodule.test_dataloader()))
        with torch.no_grad():
            features = module.encode(batch)
            assert torch.equal(module.predict_from_features(features), module(batch))
            # a modality marked absent changes the prediction the fusion makes
            absent = dataclasses.replace(
                features["text"], present=torch.zeros(len(batch["label"]), dtype=torch.bool)
            )
            changed = module.predict_from_features({**features, "text": absent})
        assert changed.shape == module(batch).shape and not torch.equal(changed, module(batch))
