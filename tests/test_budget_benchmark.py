"""The benchmark scripts: the budget one reports the flags solution.py really ran with; the
thread one tells flags from environment variables."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import market1501_budget  # noqa: E402


def test_extra_flags_override_the_configuration_and_typos_stop_early():
    configuration = dict(market1501_budget.COMMON_FLAGS, weight_decay=1.0)
    arguments = market1501_budget.command_line(configuration)
    defaults, effective = market1501_budget.solution_flags(arguments + ["--weight_decay", "2.0"])
    assert defaults["weight_decay"] == 0.0 and defaults["backbone_model_name"] == "resnet50"
    assert effective["weight_decay"] == 2.0  # absl: the last occurrence wins
    assert effective["backbone_model_name"] == "osnet_x0_25"
    with pytest.raises(SystemExit, match="weight_decy"):
        market1501_budget.solution_flags(["--weight_decy", "2.0"])


def test_any_market_recipe_file_is_a_configuration():
    configs = os.path.join(market1501_budget.REPOSITORY_PATH, "configs")
    recipe = os.path.join(configs, "tiny_baseline_market1501_resnet50.flags")
    flags = market1501_budget.configuration_flags(recipe)
    assert "time_budget_minutes" not in flags  # --minutes sets the budget
    _, effective = market1501_budget.solution_flags(market1501_budget.command_line(flags))
    assert effective["center_loss_weight"] == 0.0005 and effective["triplet_margin"] == 0.3
    assert effective["learning_rate_milestones"] == ["40", "70", "130"]
    assert market1501_budget.configuration_name(recipe) == "tiny_baseline_market1501_resnet50"
    assert market1501_budget.configuration_flags("no_flip_inside")[
        "use_horizontal_flipping_inside_model"] is False
    assert market1501_budget.configuration_flags("mobilenetv3small")[
        "backbone_model_name"] == "MobileNetV3Small"
    with pytest.raises(SystemExit, match="Market-1501"):
        market1501_budget.configuration_flags(
            os.path.join(configs, "deep_efficient_reid_cuhk03_labeled_ibn_resnet50.flags"))
    with pytest.raises(SystemExit, match="no_flip_inside"):
        market1501_budget.configuration_flags("nonexistent")


def test_thread_speed_settings_split_flags_from_environment_variables():
    import thread_speed
    settings = thread_speed.parse_settings(
        "default; TF_ENABLE_ONEDNN_OPTS=0; workers=1, opencv_threads=0,OMP_NUM_THREADS=2")
    assert settings == [
        ("default", [], {}), ("TF_ENABLE_ONEDNN_OPTS=0", [], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
        ("workers=1, opencv_threads=0, OMP_NUM_THREADS=2",
         ["--workers=1", "--opencv_threads=0"], {"OMP_NUM_THREADS": "2"})]
    with pytest.raises(SystemExit, match="workers"):
        thread_speed.parse_settings("workers")
