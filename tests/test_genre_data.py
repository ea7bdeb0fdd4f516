"""Genre dataset adapters and the classifier's settings (no audio decoding, no TensorFlow)."""

import musicrec  # noqa: F401

import os

import numpy as np
import pytest

from musicrec.genre.datasets import GenreDatasetError, gtzan_split_lists, load_genre_dataset
from musicrec.genre.classifier import GenreClassifierConfig, genre_classifier

GTZAN_GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def test_gtzan_split_lists_are_the_fault_filtered_partition():
    lists = gtzan_split_lists()
    assert {s: len(v) for s, v in lists.items()} == {"train": 443, "validation": 197, "test": 290}
    everything = [e for v in lists.values() for e in v]
    assert len(set(everything)) == 930  # disjoint
    assert {e.split("/")[0] for e in everything} == set(GTZAN_GENRES)
    assert all(e.split("/")[1].startswith(e.split("/")[0] + ".") for e in everything)


def test_gtzan_adapter_maps_the_lists_onto_the_folder_layout_whatever_the_extension(tmp_path):
    genres = tmp_path / "genres"
    for genre in GTZAN_GENRES:  # the original archive: 100 .au files a genre
        (genres / genre).mkdir(parents=True)
        for i in range(100):
            (genres / genre / f"{genre}.{i:05d}.au").touch()
    (genres / "blues" / "blues.00029.au").unlink()  # a listed file that is absent

    dataset = load_genre_dataset(tmp_path, "gtzan")
    counts = dataset.tracks["split"].value_counts().to_dict()
    assert counts == {"train": 443, "validation": 197, "test": 290}
    assert dataset.excluded == {"audio files outside the fault-filtered split": 1000 - 930}
    row = dataset.tracks.set_index("track_id").loc["blues/blues.00030"]
    assert row["path"] == str(genres / "blues" / "blues.00030.au") and row["genre"] == "blues" and row["split"] == "train"
    absent = dataset.tracks.set_index("track_id").loc["blues/blues.00029"]
    assert not os.path.exists(absent["path"])  # kept, so extraction quarantines it as missing
    assert dataset.tracks["path"].map(os.path.exists).sum() == 929


def test_gtzan_adapter_refuses_a_folder_without_genre_folders(tmp_path):
    with pytest.raises(GenreDatasetError, match="no GTZAN genre folders"):
        load_genre_dataset(tmp_path, "gtzan")


FMA_TRACKS_CSV = (
    ",set,set,track,track\n"
    ",split,subset,genre_top,title\n"
    "track_id,,,,\n"
    + "".join(f"{2 + i},training,small,{'Hip-Hop' if i % 2 else 'Folk'},song {i}\n" for i in range(20))
    + "140,training,medium,Rock,not small\n"
    "141,test,small,,no genre\n"
    "123456,test,small,Rock,six digits\n"
    "123457,test,small,Rock,six digits\n"
)


def test_fma_adapter_reads_the_two_row_header_and_splits_each_genre_7_to_3(tmp_path):
    (tmp_path / "fma_metadata").mkdir()
    (tmp_path / "fma_metadata" / "tracks.csv").write_text(FMA_TRACKS_CSV)
    (tmp_path / "fma_small").mkdir()
    dataset = load_genre_dataset(tmp_path, "fma", seed=1)
    tracks = dataset.tracks.set_index("track_id")
    assert "140" not in tracks.index and "141" not in tracks.index  # medium subset; no genre_top
    assert dataset.excluded == {"small-subset tracks without genre_top": 1}
    assert tracks.loc["2", "path"] == str(tmp_path / "fma_small" / "000" / "000002.mp3")
    assert tracks.loc["123456", "path"] == str(tmp_path / "fma_small" / "123" / "123456.mp3")
    assert tracks["genre"].value_counts().to_dict() == {"Folk": 10, "Hip-Hop": 10, "Rock": 2}
    test = tracks[tracks["split"] == "test"]["genre"].value_counts().to_dict()
    assert test == {"Folk": 3, "Hip-Hop": 3, "Rock": 1}


def test_fma_adapter_names_a_csv_without_the_fma_columns(tmp_path):
    (tmp_path / "tracks.csv").write_text("track_id,genre\n1,Rock\n")
    with pytest.raises(GenreDatasetError, match="is it FMA's tracks.csv"):
        load_genre_dataset(tmp_path, "fma")


def _folder_tree(root, sizes):
    for genre, n in sizes.items():
        (root / genre).mkdir(parents=True)
        for i in range(n):
            (root / genre / f"{genre}{i}.wav").touch()


def test_folders_adapter_split_is_stratified_and_seeded(tmp_path):
    sizes = {"jazz": 30, "metal": 11, "pop": 7}
    _folder_tree(tmp_path, sizes)
    (tmp_path / "jazz" / "notes.txt").touch()
    dataset = load_genre_dataset(tmp_path, "folders", seed=3)
    assert dataset.excluded["files without an audio extension .wav/.au/.flac/.ogg/.mp3"] == 1
    test = dataset.split("test")["genre"].value_counts()
    for genre, n in sizes.items():
        assert abs(test[genre] - 0.3 * n) <= 1, genre
    assert len(dataset.split("test")) + len(dataset.split("train")) == 48
    again = load_genre_dataset(tmp_path, "folders", seed=3)
    other = load_genre_dataset(tmp_path, "folders", seed=4)
    assert again.tracks.equals(dataset.tracks)
    assert not other.tracks["split"].equals(dataset.tracks["split"])


def test_folders_adapter_refuses_a_genre_with_one_track(tmp_path):
    _folder_tree(tmp_path, {"jazz": 5, "polka": 1})
    with pytest.raises(GenreDatasetError, match="polka"):
        load_genre_dataset(tmp_path, "folders")


def test_classifier_has_the_papers_settings():
    config = GenreClassifierConfig()
    model = genre_classifier(config, n_train=443, n_features=753)
    pca, svm = model.named_steps["pca"], model.named_steps["svm"]
    assert pca.n_components == 128 and pca.whiten
    assert svm.kernel == "rbf" and svm.gamma == pytest.approx(1 / 128) and svm.C == 1.0
    assert [name for name, _ in model.steps] == ["pca", "svm"]  # no scaler: the paper has none


def test_classifier_keeps_fewer_components_when_data_is_small():
    config = GenreClassifierConfig()
    assert genre_classifier(config, n_train=443, n_features=40).named_steps["pca"].n_components == 40
    assert genre_classifier(config, n_train=68, n_features=753).named_steps["pca"].n_components == 34
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 50)), np.repeat(["a", "b"], 10)
    fitted = genre_classifier(config, *x.shape).fit(x, y)
    assert fitted.named_steps["pca"].n_components_ == 10


def test_genre_eval_subcommand_registers_and_refuses_bad_input_with_status_2(tmp_path, capsys):
    import argparse

    from musicrec.cli.genre import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    _folder_tree(tmp_path / "data", {"jazz": 4, "pop": 4})
    no_model = parser.parse_args(["genre-eval", "--dataset", str(tmp_path / "data"), "--layout", "folders",
                                  "--feature-sets", "ae", "--out", str(tmp_path / "out")])
    assert no_model.func(no_model) == 2
    assert "need --model" in capsys.readouterr().err
    unknown_set = parser.parse_args(["genre-eval", "--dataset", str(tmp_path / "data"), "--layout", "folders",
                                     "--feature-sets", "mfcc"])
    assert unknown_set.func(unknown_set) == 2
    assert "mfcc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["genre-eval", "--dataset", "x", "--layout", "million-song"])


def test_demo_layout_leaves_out_audio_outside_the_dataset_and_counts_it(faulty_tiny_dataset, tiny_dataset):
    """The genre extractors open paths themselves, so the layout refuses the planted outside path up front."""
    pristine = load_genre_dataset(tiny_dataset, "demo")
    faulty = load_genre_dataset(faulty_tiny_dataset, "demo")
    assert faulty.excluded["tracks whose audio is outside the dataset"] == 1
    assert pristine.excluded["tracks whose audio is outside the dataset"] == 0
    assert len(faulty.tracks) == len(pristine.tracks) - 1
    assert not any(".." in path for path in faulty.tracks["path"])
