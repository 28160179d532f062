"""The Market-1501 budget benchmark reports the flags solution.py really ran with."""
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
    assert effective["backbone_model_name"] == "MobileNetV3Small"
    with pytest.raises(SystemExit, match="weight_decy"):
        market1501_budget.solution_flags(["--weight_decy", "2.0"])
