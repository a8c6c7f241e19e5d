import torch
from torch import nn

from mmexp.utils.freezing import KeepsFrozenInEval, freeze, is_frozen, unfreeze


class Tower(KeepsFrozenInEval):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Linear(2, 2))
        self.projection = nn.Linear(2, 2)


def modes(module: nn.Module) -> dict[str, bool]:
    return {name: part.training for name, part in module.named_modules()}


def test_frozen_part_stays_in_eval_and_live_parts_train():
    tower = Tower()
    freeze(tower.backbone, live=["2"])
    tower.train()
    assert not tower.backbone.training and not tower.backbone[1].training
    assert tower.backbone[2].training and tower.projection.training
    trains = {name for name, p in tower.named_parameters() if p.requires_grad}
    assert trains == {
        "backbone.2.weight",
        "backbone.2.bias",
        "projection.weight",
        "projection.bias",
    }
    tower.eval()
    assert not any(modes(tower).values())


def test_an_outer_freeze_wins_over_an_inner_one():
    tower = Tower()
    freeze(tower.backbone, live=["2"])  # the backbone's own last_n setting
    freeze(tower)  # a protocol freezing the whole encoder
    tower.train()
    assert not any(modes(tower).values())
    assert not any(p.requires_grad for p in tower.parameters())


def test_unfreeze_restores_training_everywhere():
    tower = Tower()
    freeze(tower.backbone)
    unfreeze(tower)
    tower.train()
    assert all(modes(tower).values()) and not is_frozen(tower.backbone)
    assert all(p.requires_grad for p in tower.parameters())


def test_frozen_dropout_is_deterministic_in_training():
    tower = Tower()
    freeze(tower.backbone)
    tower.train()
    x = torch.randn(8, 2)
    assert torch.equal(tower.backbone(x), tower.backbone(x))


def test_adapters_added_inside_a_frozen_backbone_take_its_eval_mode():
    from mmexp.encoders.base import ModalityEncoder
    from mmexp.encoders.freezing import Trainability

    class Encoder(ModalityEncoder):
        modality = "image"

        def __init__(self) -> None:
            super().__init__(out_dim=2)
            self.backbone = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))

    encoder = Encoder().train()
    freeze(encoder.backbone)
    lora = {"r": 2, "alpha": 4, "dropout": 0.5, "target_modules": ["0"]}
    encoder.set_trainability(Trainability("none", lora=lora))
    dropouts = [
        m for n, m in encoder.named_modules() if "lora_dropout" in n and not list(m.children())
    ]
    assert dropouts and not any(m.training for m in dropouts)
