"""The search space: Hydra sweep syntax to Optuna distributions, and trial values back."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mmexp.search.space import as_override, parse_search_space


def test_each_sweep_form_becomes_its_distribution():
    space = parse_search_space(
        {
            "lr": "tag(log, interval(0.0003, 0.01))",
            "dropout": "interval(0.0, 0.5)",
            "layers": "int(interval(1, 8))",
            "width": "choice(64, 128, 256)",
            "depth": "range(1, 10, 3)",
            "alpha": "range(0.1, 0.35, 0.1)",
            "fusion": "concat,late",
            "epochs": "3",
        },
        [],
    )
    assert space.distributions == {
        "lr": FloatDistribution(0.0003, 0.01, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "layers": IntDistribution(1, 8),
        "width": CategoricalDistribution([64, 128, 256]),
        # Python's range: 1, 4, 7 (10 is excluded)
        "depth": IntDistribution(1, 7, step=3),
        "fusion": CategoricalDistribution(["concat", "late"]),
        "alpha": space.distributions["alpha"],
    }
    alpha = space.distributions.pop("alpha")
    assert isinstance(alpha, CategoricalDistribution)
    assert alpha.choices == pytest.approx((0.1, 0.2, 0.3))
    assert space.fixed == ["epochs=3"]


def test_the_command_line_replaces_the_configs_entry():
    space = parse_search_space(
        {"width": "choice(64, 128)", "lr": "interval(0.001, 0.01)"},
        ["width=32", "lr=choice(0.001,0.003)", "seed=1,2", "data.task=synergy"],
    )
    assert space.distributions == {
        "lr": CategoricalDistribution([0.001, 0.003]),
        "seed": CategoricalDistribution([1, 2]),
    }
    assert sorted(space.fixed) == ["data.task=synergy", "width=32"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("tag(log, choice(1, 2))", "tag\\(log"),
        ("interval(0.5, 0.1)", "low < high"),
        ("tag(log, interval(0.0, 1.0))", "low > 0"),
        ("range(5, 1)", "holds no value"),
        ("choice([1,2],[3])", "only numbers"),
    ],
)
def test_a_sweep_optuna_cannot_sample_is_named(expression, message):
    with pytest.raises(ValueError, match=f"model.width: .*{message}|model.width.*{message}"):
        parse_search_space({"model.width": expression}, [])


def test_the_grid_lists_every_value_and_refuses_continuous_ones():
    space = parse_search_space({"a": "choice(x, y)", "b": "range(0, 6, 2)"}, [])
    assert space.grid() == {"a": ["x", "y"], "b": [0, 2, 4]}
    continuous = parse_search_space({"a": "choice(x, y)", "lr": "interval(0.1, 0.2)"}, [])
    with pytest.raises(ValueError, match="'lr' is continuous"):
        continuous.grid()


@pytest.mark.parametrize(
    "value", ["concat", "1e-3", "it's", "a\\b", "end\\", "x\\'y", 0.000587194737873281, 64, True]
)
def test_a_value_reads_back_as_itself(value):
    override = OverridesParser.create().parse_overrides([as_override("key", value)])[0]
    assert override.value() == value and type(override.value()) is type(value)
