import pytest

from softviz.config import PAPER_SETTINGS, PRESETS, Mode, TraceConfig


def test_paper_presets():
    assert Mode.preset("soft").cot_temperature == 0.5 and Mode.preset("soft").noise_scale == 0.33
    assert Mode.preset("fuzzy").cot_temperature == 1e-4
    assert Mode.preset("hard").cot_temperature == 1.0 and Mode.preset("hard-greedy").is_greedy
    assert Mode.preset("soft-greedy").noise_scale == 0 and Mode.preset("soft-greedy").is_greedy
    assert not Mode.preset("fuzzy").is_greedy
    assert all(name in PRESETS for name in PAPER_SETTINGS)
    assert Mode.preset("Soft_Thinking").top_k == 10
    assert Mode.preset("soft", noise_scale=1.0).noise_scale == 1.0


@pytest.mark.parametrize("fields, field_name", [
    (dict(kind="nope"), "kind"),
    (dict(kind="soft", cot_temperature=0.0), "cot_temperature"),
    (dict(kind="soft", cot_temperature=-1.0), "cot_temperature"),
    (dict(kind="hard", cot_temperature=-0.1, noise_scale=0), "cot_temperature"),
    (dict(kind="soft", cot_temperature=float("nan")), "cot_temperature"),
    (dict(kind="soft", noise_scale=-0.1), "noise_scale"),
    (dict(kind="hard", cot_temperature=1.0, noise_scale=0.33), "noise_scale"),
    (dict(kind="soft_thinking", top_k=0), "top_k"),
    (dict(kind="soft_thinking", top_p=1.5), "top_p"),
    (dict(kind="soft", cold_stop_entropy=0.1), "cold_stop_entropy"),
    (dict(kind="gumbel", gumbel_temperature=0.0), "gumbel_temperature"),
    (dict(kind="dirichlet", dirichlet_alpha=-1.0), "dirichlet_alpha"),
    (dict(kind="soft", answer_temperature=float("inf")), "answer_temperature"),
])
def test_invalid_values_name_the_field(fields, field_name):
    with pytest.raises(ValueError, match=f"Mode.{field_name} .*allowed"):
        Mode(**fields)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="unknown mode 'sof'.*soft, soft-greedy"):
        Mode.preset("sof")


def test_trace_config_validation():
    with pytest.raises(ValueError, match="top_k"):
        TraceConfig(top_k=0)
    with pytest.raises(ValueError, match="nearest_metric"):
        TraceConfig(nearest_metric="dot")
    assert TraceConfig(layers=["model.layers.0"]).layers == ("model.layers.0",)
