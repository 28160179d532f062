"""Using a trained run: the feature extractor (equal to the evaluator's features), the extraction
command, and models carried to another dataset (evaluated there, fine-tuned there)."""
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import make_config, make_tiny_folder_dataset

TINY = dict(backbone_model_name="MobileNetV3Small", backbone_weights="none", image_height=64,
            image_width=32, region_num=1, use_adaptive_l1_l2_regularizer=False, identity_num_per_batch=4, image_num_per_identity=2,
            steps_per_epoch=2, freeze_backbone_for_N_epochs=0, epoch_num=1,
            evaluate_testing_every_N_epochs=1, workers=1, seed=0,
            batch_normalization_momentum=0.5, learning_rate_mode="constant",
            use_horizontal_flipping_in_evaluation=True, save_data_to_disk=True)


def tiny_dataset(root, seed, identities):
    return make_tiny_folder_dataset(
        root, seed=seed, num_train_identities=identities, num_test_identities=8, num_cameras=3,
        train_images_per_identity=(3, 4), gallery_images_per_camera=(1, 2), max_query_cameras=2,
        num_distractors=3, num_junk=0, family_size=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch run on one synthetic dataset (12 identities): (run folder, its data root)."""
    from training.trainer import Trainer
    root = tiny_dataset(tmp_path_factory.mktemp("data_a"), seed=1, identities=12)
    config = make_config(dataset_name="Folder", root_folder_path=root,
                         output_folder_path=str(tmp_path_factory.mktemp("run_a")),
                         visualize_num=2, **TINY)
    Trainer(config).train()
    return config.run_folder, root


def unit_rows(features):
    features = np.asarray(features, np.float64)
    return features / np.sqrt((features ** 2).sum(axis=1, keepdims=True))


def test_the_extractor_gives_the_evaluators_features(trained_run):
    from inference.feature_extractor import FeatureExtractor
    run_folder, _ = trained_run
    saved = np.load(os.path.join(run_folder, "test.npz"))
    paths = list(saved["query_image_file_path_array"])
    extractor = FeatureExtractor.from_run(run_folder)
    assert extractor.use_horizontal_flipping  # as the run's evaluation
    features = extractor.extract(paths, progress=False)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(features, unit_rows(saved["query_image_features_array"]),
                               atol=1e-6)
    # uint8 RGB arrays of another size are resized like files are.
    arrays = [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in paths[:3]]
    from_arrays = FeatureExtractor.from_run(os.path.join(run_folder, "training_model.h5")
                                            ).extract(arrays)
    np.testing.assert_allclose(from_arrays, features[:3], atol=1e-5)


def test_a_run_draws_its_training_batch_and_ranked_lists(trained_run):
    run_folder, _ = trained_run
    for name in ("training_batch.png", "test_ranked_lists_best.png",
                 "test_ranked_lists_worst.png"):
        image = cv2.imread(os.path.join(run_folder, name))
        assert image is not None and image.shape[0] > 100, name


def test_the_extraction_command_writes_features_paths_and_identities(trained_run, tmp_path):
    from inference.feature_extractor import FeatureExtractor
    from tools.extract_features import extract_folder
    run_folder, root = trained_run
    output = extract_folder(run_folder, os.path.join(root, "query"), str(tmp_path / "q.npz"))
    saved = np.load(output)
    names = [os.path.basename(path) for path in saved["image_file_paths"]]
    assert names == sorted(os.listdir(os.path.join(root, "query")))
    assert [int(name.split("_")[0]) for name in names] == list(saved["identity_ID"])
    assert [int(name.split("_c")[1][0]) for name in names] == list(saved["camera_ID"])
    assert str(saved["fingerprint"]) == FeatureExtractor.from_run(run_folder).fingerprint
    assert saved["features"].shape == (len(names), saved["features"].shape[1])


def test_bad_input_is_named(trained_run, tmp_path):
    from datasets.image_check import BadImagesError
    from inference.feature_extractor import FeatureExtractor
    from inference.run_loading import locate_run
    from tools.extract_features import extract_folder
    run_folder, root = trained_run
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        extract_folder(run_folder, str(tmp_path / "empty"), str(tmp_path / "out.npz"))
    assert not (tmp_path / "out.npz").exists()
    bad = tmp_path / "bad"
    shutil.copytree(os.path.join(root, "query"), bad)
    (bad / "0001_c1_broken.jpg").write_bytes(os.urandom(300))
    with pytest.raises(BadImagesError, match="0001_c1_broken.jpg"):
        FeatureExtractor.from_run(run_folder).extract_folder(str(bad))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(os.path.join(run_folder, "training_model.h5"), lonely)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        locate_run(str(lonely / "training_model.h5"))


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory):
    """Another synthetic dataset with another identity count (7)."""
    return tiny_dataset(tmp_path_factory.mktemp("data_b"), seed=2, identities=7)


def test_a_checkpoint_of_another_dataset_is_evaluated_there(trained_run, other_dataset,
                                                            tmp_path):
    from inference.feature_extractor import FeatureExtractor
    from training.config import resolve
    from training.trainer import Trainer
    from conftest import default_config_values
    run_folder, _ = trained_run
    checkpoint = os.path.join(run_folder, "training_model.h5")
    values = default_config_values(evaluation_only=True, pretrained_model_file_path=checkpoint,
                                   dataset_name="Folder", root_folder_path=other_dataset,
                                   output_folder_path=str(tmp_path))
    config, saved_path = resolve(values, {"root_folder_path"})
    assert saved_path is not None
    summary, = Trainer(config).evaluate()
    assert summary["mAP"] > 0
    # The checkpoint's own weights embedded the other dataset: its saved features are the
    # extractor's (near-identical embeddings of a barely trained model make its ranking
    # sensitive to 1e-8 differences, so the features are compared, not the metrics).
    saved = np.load(os.path.join(config.run_folder, "test.npz"))
    extractor = FeatureExtractor.from_run(run_folder)
    for split in ("query", "gallery"):
        paths = list(saved[split + "_image_file_path_array"])
        assert all(path.startswith(other_dataset) for path in paths)
        np.testing.assert_allclose(extractor.extract(paths, progress=False),
                                   unit_rows(saved[split + "_image_features_array"]), atol=1e-6)


def test_fine_tuning_from_another_dataset_keeps_all_but_the_classifiers(
        trained_run, other_dataset, tmp_path, capsys):
    from callbacks.checkpoint import read_checkpoint_metadata
    from training.trainer import Trainer
    run_folder, _ = trained_run
    checkpoint = os.path.join(run_folder, "training_model.h5")
    config = make_config(dataset_name="Folder", root_folder_path=other_dataset,
                         output_folder_path=str(tmp_path), pretrained_model_file_path=checkpoint,
                         **TINY)
    trainer = Trainer(config)
    trainer.build_data()
    trainer.setup()
    assert trainer.num_classes == 7
    trainer.load_checkpoint(checkpoint)
    assert "trained on 12 identities, this run has 7" in capsys.readouterr().out
    source = Trainer(make_config(dataset_name="Folder", root_folder_path=trained_run[1],
                                 **TINY))
    source.build_data()
    source.build_models()
    source.load_checkpoint(checkpoint)
    pairs = list(zip(source.models.training_model.weights, trainer.models.training_model.weights))
    copied = [a for a, b in pairs if a.shape == b.shape]
    assert len(copied) == len(pairs) - 2  # the classifier kernels: global, region
    for a, b in pairs:
        if a.shape == b.shape:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        else:
            assert "classifier" in b.name and b.shape[-1] == 7
    trainer.train()
    assert read_checkpoint_metadata(os.path.join(config.run_folder, "training_model.h5"))[
        "num_classes"] == 7


def test_several_datasets_train_together_with_their_identities_apart(tmp_path):
    from datasets import load_accumulated_info_of_dataset
    from datasets.synthetic import generate_dataset
    from training.config import OptionError
    from training.trainer import Trainer
    sizes = dict(num_test_identities=4, num_cameras=2, train_images_per_identity=(2, 3),
                 gallery_images_per_camera=(1, 1), max_query_cameras=1, num_distractors=0,
                 num_junk=0, family_size=1)
    generate_dataset(str(tmp_path / "Market-1501-v15.09.15"), seed=3, num_train_identities=5,
                     **sizes)
    generate_dataset(str(tmp_path / "DukeMTMC-reID"), seed=4, num_train_identities=6, **sizes)
    market = load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    duke = load_accumulated_info_of_dataset(str(tmp_path), "DukeMTMC_reID")
    train_df, query_df, gallery_df, encoders = load_accumulated_info_of_dataset(
        str(tmp_path), "Market1501,DukeMTMC_reID")
    assert len(train_df) == len(market[0]) + len(duke[0])
    assert len(encoders["identity_ID"].classes_) == 5 + 6
    assert query_df.equals(market[1]) and gallery_df.equals(market[2])
    market_ids = set(train_df["identity_ID"][:len(market[0])])
    duke_ids = set(train_df["identity_ID"][len(market[0]):])
    assert market_ids == set(market[0]["identity_ID"]) and not market_ids & duke_ids
    config = make_config(dataset_name="Market1501, DukeMTMC_reID", root_folder_path=str(tmp_path),
                         output_folder_path=str(tmp_path / "out"), **TINY)
    assert config.run_folder.endswith("Market1501+DukeMTMC_reID_MobileNetV3Small")
    trainer = Trainer(config)
    trainer.build_data()
    trainer.build_models()
    assert trainer.num_classes == 11
    assert trainer.models.training_model.get_layer("classification_model").output_shape[0][-1] \
        == 11
    for bad, message in (("Market1501,Market1501", "twice"), ("Market1501,Folder", "Folder"),
                         ("Market1501,Nope", "Nope")):
        with pytest.raises(OptionError, match=message):
            make_config(dataset_name=bad, **TINY)

