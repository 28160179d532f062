"""Training on several datasets at once (``--dataset_name Market1501,DukeMTMC_reID``).

Identities are kept apart per dataset: each later dataset's identity and camera IDs are shifted
past the earlier ones', so two datasets' person 1 are two classes (as torchreid's multi-source
and fast-reid's combined training do). The training split is the union; query and gallery are
the first dataset's, unchanged (evaluate another with ``--evaluation_only --dataset_name``).
"""
import pandas as pd

SEPARATOR = ","


def dataset_names(dataset_name):
    """The names in ``"Market1501,DukeMTMC_reID"`` (one name gives a list of one)."""
    return [name.strip() for name in str(dataset_name).split(SEPARATOR)]


def _shifted(frame, identity_offset, camera_offset):
    frame = frame.copy()
    real = frame["identity_ID"] > 0  # 0 (distractor) and -1 (junk) keep their meaning
    frame.loc[real, "identity_ID"] += identity_offset
    frame["camera_ID"] += camera_offset
    return frame


def combine_datasets(loaded):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of the loaded datasets'
    ``(name, splits)`` pairs, the first one's query and gallery kept as they are."""
    from datasets.common import fit_label_encoder

    trains, identity_offset, camera_offset = [], 0, 0
    query_df = gallery_df = None
    for index, (name, (train_df, query, gallery, _)) in enumerate(loaded):
        frames = [_shifted(frame, identity_offset, camera_offset)
                  for frame in (train_df, query, gallery)]
        trains.append(frames[0])
        if index == 0:
            query_df, gallery_df = frames[1], frames[2]
        identity_offset = 1 + max(int(frame["identity_ID"].max()) for frame in frames)
        camera_offset = 1 + max(int(frame["camera_ID"].max()) for frame in frames)
        print("{}: {} training images of {} identities.".format(
            name, len(train_df), train_df["identity_ID"].nunique()))
    train_df = pd.concat(trains, ignore_index=True)
    return train_df, query_df, gallery_df, fit_label_encoder(train_df)


def check_combination(names, known_names):
    """A message saying what is wrong with the combination ``names``, or None."""
    unknown = [name for name in names if name not in known_names]
    if unknown:
        return "unknown dataset(s) {}; allowed values: {}".format(", ".join(unknown),
                                                                 ", ".join(known_names))
    if len(set(names)) != len(names):
        return "a dataset is listed twice ({})".format(SEPARATOR.join(names))
    if len(names) > 1 and "Folder" in names:
        return ("Folder cannot be combined with other datasets: its --root_folder_path is the "
                "dataset folder itself, theirs the folder above theirs")
    return None
