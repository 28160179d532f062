"""The frozen run configuration: grouping, immutability, config.json and reading it back."""
import json
import os

import pytest
from absl import flags

from conftest import default_config_values, make_config
from training import config as run_config
from training.config import FrozenConfigError, OptionError, RunConfig
from utils.machine import is_x86


def test_every_project_flag_is_in_exactly_one_group_and_nothing_else():
    import training.flags
    project_flags = {flag.name for flag in
                     flags.FLAGS.get_key_flags_for_module(training.flags.__name__)}
    project_flags -= {"min_value_in_clipping", "max_value_in_clipping"}  # aliases
    assert sorted(run_config.FLAG_NAMES) == sorted(project_flags)
    assert len(set(run_config.FLAG_NAMES)) == len(run_config.FLAG_NAMES)


def test_assignment_raises_and_replace_builds_a_checked_copy():
    config = make_config(image_height=128, image_width=64)
    with pytest.raises(FrozenConfigError):
        config.solver.epoch_num = 3
    with pytest.raises(FrozenConfigError):
        config.model = None
    with pytest.raises(FrozenConfigError):
        del config.data.workers
    changed = config.replace(epoch_num=3)
    assert changed.solver.epoch_num == 3 and config.solver.epoch_num == 1000000
    with pytest.raises(OptionError, match="--epoch_num"):
        config.replace(epoch_num=-1)


def test_derived_values():
    config = make_config(identity_num_per_batch=8, image_num_per_identity=3, image_height=128,
                         image_width=64, use_horizontal_flipping_in_evaluation=True,
                         output_folder_path="/tmp/out", dataset_name="Synthetic",
                         backbone_model_name="MobileNetV3Small")
    assert config.batch_size == 24 and config.input_shape == (128, 64, 3)
    assert config.run_folder == "/tmp/out/Synthetic_MobileNetV3Small"
    assert config.evaluation_passes == 2


def test_saved_config_round_trips_and_prints_only_project_flags(tmp_path):
    config = make_config(seed=3, cosine_margin=0.2, classifier_head="arcface")
    path = str(tmp_path / "config.json")
    config.save(path)
    saved = json.loads(open(path).read())
    assert list(saved) == ["data", "model", "loss", "solver", "evaluation", "distribution",
                           "run"]
    assert saved["loss"]["cosine_margin"] == 0.2 and saved["run"]["seed"] == 3
    assert RunConfig.from_flag_values(RunConfig.load_values(path)) == config
    text = config.describe()
    for absl_internal in ("tt_check_filter", "xml_output_file", "logtostderr", "flagfile"):
        assert absl_internal not in text
    assert "  classifier_head arcface" in text and "[solver]" in text


def _saved_run(tmp_path, **overrides):
    output = tmp_path / "output"
    config = make_config(output_folder_path=str(output), dataset_name="Synthetic",
                         backbone_model_name="MobileNetV3Small", image_height=128,
                         image_width=64, region_num=2, epoch_num=7, **overrides)
    os.makedirs(config.run_folder)
    config.save(os.path.join(config.run_folder, "config.json"))
    checkpoint = os.path.join(config.run_folder, "training_model.h5")
    open(checkpoint, "wb").close()
    return config, checkpoint


def test_evaluation_only_needs_only_the_checkpoint(tmp_path):
    trained, checkpoint = _saved_run(tmp_path, testing_size=0.5, use_re_ranking=False)
    values = default_config_values(root_folder_path=str(tmp_path), evaluation_only=True,
                                   pretrained_model_file_path=checkpoint)
    config, path = run_config.resolve(values, {"evaluation_only", "pretrained_model_file_path",
                                               "root_folder_path"})
    assert path == os.path.join(trained.run_folder, "config.json")
    assert config.model == trained.model and config.solver == trained.solver
    assert config.data.root_folder_path == str(tmp_path)  # explicit flags override
    assert config.data.testing_size == 1.0  # a checkpoint is evaluated on the full test set
    assert config.run.evaluation_only and config.run.output_folder_path == values[
        "output_folder_path"]  # the run group is never read back

    # A non-shaping flag overrides; a model-shaping one that differs is refused by name.
    values.update(use_re_ranking=True, region_num=1)
    config, _ = run_config.resolve(values, {"evaluation_only", "pretrained_model_file_path",
                                            "use_re_ranking"})
    assert config.evaluation.use_re_ranking and config.model.region_num == 2
    with pytest.raises(OptionError, match="--region_num=1"):
        run_config.resolve(values, {"evaluation_only", "pretrained_model_file_path",
                                    "region_num"})
    values.update(region_num=2)  # the same value given explicitly is no conflict
    run_config.resolve(values, {"evaluation_only", "pretrained_model_file_path", "region_num"})


def test_resume_reads_the_run_folder_given_directly_or_as_parent(tmp_path):
    trained, _ = _saved_run(tmp_path)
    for output in (trained.run.output_folder_path, trained.run_folder):
        values = default_config_values(resume=True, output_folder_path=output,
                                       root_folder_path=str(tmp_path))
        config, path = run_config.resolve(values, {"resume", "output_folder_path",
                                                   "root_folder_path"})
        assert path is not None and config.solver.epoch_num == 7
        assert config.run_folder == trained.run_folder
        assert config.model.backbone_model_name == "MobileNetV3Small"
    # Without --resume, the flags alone make the configuration.
    values = default_config_values(output_folder_path=trained.run.output_folder_path,
                                   root_folder_path=str(tmp_path))
    config, path = run_config.resolve(values, set())
    assert path is None and config.model.backbone_model_name == "resnet50"


def test_choices_are_the_implementing_modules_constants():
    from applications import BACKBONE_NAMES
    from applications.reid_model import POOLING_MODES
    assert tuple(flags.FLAGS["backbone_model_name"].parser.enum_values) == tuple(BACKBONE_NAMES)
    assert tuple(flags.FLAGS["pooling_mode"].parser.enum_values) == POOLING_MODES


def test_deterministic_needs_a_seed():
    with pytest.raises(OptionError, match="--seed"):
        make_config(deterministic=True)
    assert make_config(deterministic=True, seed=1).run.deterministic


def _tensorflow_start_up(**environment):
    """(stderr, TF_ENABLE_ONEDNN_OPTS as TensorFlow saw it) of a process importing utils.tf_env."""
    import subprocess
    import sys
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "REID_VERBOSE_TENSORFLOW",
                          "TF_ENABLE_ONEDNN_OPTS")}
    env.update(environment)
    code = ("import os; from utils.tf_env import tf; print(float(tf.reduce_sum(tf.ones(3)))); "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            env=env, timeout=120)
    lines = result.stdout.split()
    assert result.returncode == 0 and lines[0] == "3.0", result.stderr
    return result.stderr, lines[1]


def test_tensorflow_start_up_lines_are_hidden_unless_asked_for():
    stderr, onednn = _tensorflow_start_up()
    assert stderr == ""
    # Asked for, TensorFlow's own lines come through; on x86 they say oneDNN is on, which
    # TensorFlow itself does only on CPUs with AVX-512 VNNI or newer (utils/tf_env.py).
    verbose, _ = _tensorflow_start_up(REID_VERBOSE_TENSORFLOW="1")
    assert verbose.strip(), "REID_VERBOSE_TENSORFLOW=1 showed none of TensorFlow's lines"
    if is_x86():
        assert onednn == "1"
        assert "oneDNN custom operations are on" in verbose
        # The user's setting wins.
        off, onednn = _tensorflow_start_up(REID_VERBOSE_TENSORFLOW="1", TF_ENABLE_ONEDNN_OPTS="0")
        assert onednn == "0" and "oneDNN custom operations are on" not in off


def test_optimizer_and_milestone_flags():
    config = make_config(optimizer="sgd", sgd_nesterov=True, learning_rate_mode="warmup_multistep",
                         learning_rate_milestones=["70", " 40"], learning_rate_gamma=0.5)
    assert config.solver.learning_rate_milestones == [40, 70]
    from training.trainer import Trainer
    trainer = Trainer(config)
    assert trainer.schedule.milestones == (40, 70) and trainer.schedule.gamma == 0.5
    with pytest.raises(OptionError, match="--learning_rate_milestones"):
        make_config(learning_rate_milestones=["forty"])
    with pytest.raises(OptionError, match="--sgd_momentum"):
        make_config(sgd_momentum=1.0)
    with pytest.raises(OptionError, match="--optimizer"):
        make_config(optimizer="lamb")
