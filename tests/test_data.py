"""Data: real Omniglot, its splits, Lake's runs and small sets, caching, downloads, sinusoids, image folders."""

from __future__ import annotations

import hashlib
import importlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The package re-exports the function ``omniglot``, which hides the module of the same name.
omniglot_module = importlib.import_module("metalearn_lib.data.omniglot")

from metalearn_lib.data import (ClassImages, DataNotFoundError, SinusoidSampler, image_folder, lake_runs,
                                load_omniglot_sets, omniglot, omniglot_small)
from metalearn_lib.data import paths as paths_module
from metalearn_lib.data.omniglot import omniglot_folder


def test_lake_sets_have_the_published_sizes(data_root):
    sets = load_omniglot_sets()
    assert sets["background"].num_classes == 964 and len(sets["background"].images) == 19280
    assert sets["evaluation"].num_classes == 659 and len(sets["evaluation"].images) == 13180
    assert sets["background"].image_shape == (1, 28, 28)
    assert (sets["background"].counts == 20).all()


def test_strokes_are_one_and_paper_is_zero(data_root):
    images = load_omniglot_sets()["background"].images.float() / 255
    assert images.max() == 1.0 and images.min() == 0.0
    assert images.mean() < 0.2  # mostly paper: ink covers a small part of each drawing


@pytest.mark.parametrize("split,subset,count", [
    ("lake", "train", 792), ("lake", "val", 172), ("lake", "trainval", 964), ("lake", "test", 659),
    ("vinyals", "train", 1028 * 4), ("vinyals", "val", 172 * 4), ("vinyals", "trainval", 1200 * 4),
    ("vinyals", "test", 423 * 4)])
def test_split_sizes(data_root, split, subset, count):
    assert omniglot(split, subset).num_classes == count


@pytest.mark.parametrize("subset", ["train", "val", "trainval", "test"])
def test_vinyals_split_matches_the_published_files(data_root, subset):
    published = (data_root / "splits" / "vinyals" / f"{subset}.txt").read_text().split()
    assert set(omniglot("vinyals", subset).names) == set(published)


def test_lake_split_subsets_are_disjoint_and_cover_background(data_root):
    train, val, test = (set(omniglot("lake", s).names) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val == set(omniglot("lake", "trainval").names)


def test_rotations_make_new_classes_with_rotated_images(data_root):
    plain = omniglot("lake", "val", rotations=False)
    rotated = omniglot("lake", "val", rotations=True)
    assert rotated.num_classes == 4 * plain.num_classes
    assert rotated.names[1] == plain.names[0] + "/rot090"
    torch.testing.assert_close(rotated[1], torch.rot90(plain[0], 1, dims=(-2, -1)))


def test_unknown_split_and_subset_are_clear_errors(data_root):
    with pytest.raises(ValueError, match="unknown split 'imagenet'"):
        omniglot("imagenet", "train")
    with pytest.raises(ValueError, match="unknown subset 'dev'"):
        omniglot("lake", "dev")


def test_missing_data_names_the_variable_and_download(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="METALEARN_DATA.*download=True"):
        omniglot("lake", "train")


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    """A two-alphabet Omniglot tree in torchvision's layout (random strokes)."""
    rng = np.random.default_rng(0)
    for set_name in ("images_background", "images_evaluation"):
        for a in ("Alpha", "Beta"):
            for c in (1, 2, 3):
                folder = tmp_path / "omniglot-py" / set_name / a / f"character{c:02d}"
                folder.mkdir(parents=True)
                for i in range(20):
                    ink = (rng.random((105, 105)) > 0.9) * 255
                    Image.fromarray((255 - ink).astype(np.uint8)).save(folder / f"{i:04d}_{c:02d}.png")
    return tmp_path


def test_cache_is_used_on_the_second_load_and_rebuilt_when_corrupt(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_CACHE", str(tmp_path / "cache"))
    first = load_omniglot_sets(tiny_root, image_size=20)
    assert first["background"].num_classes == 6 and first["background"].image_shape == (1, 20, 20)
    cache_files = list((tmp_path / "cache").glob("omniglot-20px-*.pt"))
    assert len(cache_files) == 1, "the first load should write one cache file"

    decode = omniglot_module._decode_set

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached load must not decode PNGs")

    monkeypatch.setattr(omniglot_module, "_decode_set", no_decoding)
    second = load_omniglot_sets(tiny_root, image_size=20)
    assert torch.equal(first["evaluation"].images, second["evaluation"].images)
    assert first["background"].names == second["background"].names

    cache_files[0].write_bytes(b"not a torch file")  # a corrupt cache is rebuilt, not trusted
    monkeypatch.setattr(omniglot_module, "_decode_set", decode)
    assert torch.equal(load_omniglot_sets(tiny_root, image_size=20)["evaluation"].images, first["evaluation"].images)


def test_a_different_size_gets_its_own_cache(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_CACHE", str(tmp_path / "cache"))
    assert load_omniglot_sets(tiny_root, image_size=16)["background"].image_shape == (1, 16, 16)
    assert load_omniglot_sets(tiny_root, image_size=105)["background"].image_shape == (1, 105, 105)
    assert len(list((tmp_path / "cache").glob("omniglot-*.pt"))) == 2
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot_sets(tiny_root, image_size=2)


def test_lake_small_sets(data_root):
    assert omniglot_small(1).num_classes == 136
    assert omniglot_small(2).num_classes == 156
    assert omniglot_small(1, image_size=105).image_shape == (1, 105, 105)
    with pytest.raises(ValueError, match="1 and 2"):
        omniglot_small(3)


def test_lake_runs_are_twenty_20_way_one_shot_runs(data_root):
    runs = lake_runs()
    assert len(runs) == 20
    for run in runs:
        assert run.x_support.shape == (20, 1, 28, 28) and run.x_query.shape == (20, 1, 28, 28)
        assert sorted(run.y_query.tolist()) == list(range(20))  # each class is asked once
    assert runs[0].y_query[0].item() == 7  # run01/test/item01 -> training/class08 in the answer key
    assert lake_runs(image_size=105)[0].x_support.shape == (20, 1, 105, 105)


def _make_zip(folder: Path, name: str, files: dict[str, np.ndarray]) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, array in files.items():
            buffer = Path(folder / "tmp.png")
            Image.fromarray(array).save(buffer)
            zf.write(buffer, member)
    return path


def test_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    """The real download path, exercised offline with file:// URLs."""
    source = tmp_path / "server"
    source.mkdir()
    paper = np.full((105, 105), 255, dtype=np.uint8)
    urls = {}
    for set_name in ("images_background", "images_evaluation"):
        files = {f"{set_name}/Alpha/character{c:02d}/{i:04d}_{c:02d}.png": paper for c in (1, 2) for i in range(3)}
        archive = _make_zip(source, f"{set_name}.zip", files)
        urls[set_name] = (archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(omniglot_module, "SETS", urls)
    root = tmp_path / "data"
    with pytest.raises(DataNotFoundError):
        omniglot_folder(root)
    folder = omniglot_folder(root, download=True)
    assert (folder / "images_background" / "Alpha" / "character01").is_dir()
    monkeypatch.setenv("METALEARN_CACHE", str(tmp_path / "cache"))
    sets = load_omniglot_sets(root, image_size=8)
    assert sets["evaluation"].num_classes == 2 and int(sets["evaluation"].images.max()) == 0  # blank paper

    bad = {k: (u, "0" * 32) for k, (u, _) in urls.items()}
    monkeypatch.setattr(omniglot_module, "SETS", bad)
    with pytest.raises(DataNotFoundError, match="MD5"):
        omniglot_folder(tmp_path / "other", download=True)


def test_unreachable_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="could not download"):
        paths_module.fetch((tmp_path / "nothing.zip").as_uri(), tmp_path / "x.zip", "0" * 32)


def test_sinusoid_tasks_follow_the_maml_distribution():
    batch = SinusoidSampler(shots=10, queries=7, seed=3).sample_batch(500)
    assert batch.x_support.shape == (500, 10, 1) and batch.y_query.shape == (500, 7, 1)
    assert 0.1 <= batch.amplitude.min() and batch.amplitude.max() <= 5.0
    assert 0 <= batch.phase.min() and batch.phase.max() <= torch.pi
    assert -5 <= batch.x_support.min() and batch.x_query.max() <= 5
    torch.testing.assert_close(batch.y_support, batch.function(batch.x_support))
    again = SinusoidSampler(shots=10, queries=7, seed=3).sample_batch(500)
    assert torch.equal(batch.x_query, again.x_query)
    with pytest.raises(ValueError, match="positive"):
        SinusoidSampler(shots=0)
    with pytest.raises(ValueError, match="positive"):
        SinusoidSampler().sample_batch(0)


def test_image_folder_reads_one_folder_per_class(tmp_path):
    rng = np.random.default_rng(0)
    for c, count in (("cardinal", 4), ("finch", 6), ("rare", 1)):
        (tmp_path / c).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not a class")
    classes = image_folder(tmp_path, image_size=16, min_per_class=2)
    assert classes.names == ["cardinal", "finch"]
    assert classes.counts.tolist() == [4, 6] and classes.image_shape == (3, 16, 16)
    assert image_folder(tmp_path, image_size=16, channels=1).image_shape == (1, 16, 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="at least 50 images"):
        image_folder(tmp_path, min_per_class=50)


def test_class_images_checks_its_input():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ClassImages(torch.zeros(3, 4, 4), torch.tensor([0, 3]), ["a"])
    with pytest.raises(ValueError, match="multiples of 90"):
        ClassImages.from_grouped(torch.zeros(2, 3, 1, 4, 4), ["a", "b"]).with_rotations((45,))
