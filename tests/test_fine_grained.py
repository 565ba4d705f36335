"""Fine-grained data: CUB-200-2011 and Flowers-102 read from small folders in their real layouts (no
network), the few-shot class splits, and within-group episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metalearn_lib.data import ClassImages, DataNotFoundError
from metalearn_lib.data.fine_grained import (GroupedEpisodeSampler, alphabet_of, cub200, cub_family, flowers102,
                                             split_classes)

CUB_NAMES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani",
             "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet", "008.Rhinoceros_Auklet"]


def write_image(path: Path, color: tuple[int, int, int], size=(40, 30), fmt="JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt, quality=100)


@pytest.fixture
def cub_root(tmp_path) -> Path:
    """CUB_200_2011/ with 8 classes of 3 images: the left half of each image red, the right half blue."""
    base = tmp_path / "CUB_200_2011"
    images_txt, boxes_txt = [], []
    image_id = 0
    for c, name in enumerate(CUB_NAMES):
        for k in range(3):
            image_id += 1
            rel = f"{name}/{name.split('.', 1)[1]}_{k:04d}_{image_id}.jpg"
            array = np.zeros((30, 40, 3), dtype=np.uint8)
            array[:, :20] = (250, 0, 0)
            array[:, 20:] = (0, 0, 250)
            array[0, 0] = (c * 10, k * 10, 0)      # tell images apart
            path = base / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, "PNG")   # PNG: exact colours
            images_txt.append(f"{image_id} {rel}")
            boxes_txt.append(f"{image_id} 0.0 0.0 20.0 30.0")   # the red half
    (base / "images.txt").write_text("\n".join(images_txt) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(boxes_txt) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c + 1} {n}" for c, n in enumerate(CUB_NAMES)) + "\n")
    return tmp_path


def test_split_rule_matches_chen_et_al():
    train, val, test = (split_classes(200, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (100, 50, 50)
    assert train[:3] == [0, 2, 4] and val[:3] == [1, 5, 9] and test[:3] == [3, 7, 11]
    assert sorted(train + val + test) == list(range(200))
    assert split_classes(102, "train").__len__() == 51 and len(split_classes(102, "test")) == 25
    with pytest.raises(ValueError, match="subset"):
        split_classes(10, "novel")


def test_cub_reads_the_official_layout(cub_root):
    everything = cub200("all", image_size=16, root=cub_root)
    assert isinstance(everything, ClassImages)
    assert everything.names == CUB_NAMES and everything.counts.tolist() == [3] * 8
    assert everything.images.shape == (24, 3, 16, 16) and everything.images.dtype == torch.uint8
    test = cub200("test", image_size=16, root=cub_root)
    assert test.names == [CUB_NAMES[3], CUB_NAMES[7]]
    assert cub200("train", image_size=16, root=cub_root).names == CUB_NAMES[0::2]
    whole = everything.images.float()
    assert whole[:, 0, :, :6].mean() > 200 and whole[:, 2, :, -6:].mean() > 200   # red left, blue right


def test_cub_crop_uses_the_bounding_boxes(cub_root):
    cropped = cub200("all", image_size=16, root=cub_root, crop=True).images.float()
    assert cropped[:, 0].mean() > 240 and cropped[:, 2].mean() < 10     # only the red half is left


def test_cub_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="download=True"):
        cub200(root=tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        cub200(root=tmp_path, image_size=2)


def test_cub_family_groups_lookalike_species():
    assert cub_family("158.Bay_breasted_Warbler") == "Warbler"
    assert cub_family("001.Black_footed_Albatross") == "Albatross"
    assert alphabet_of("Tengwar/character03/rot090") == "Tengwar"


@pytest.fixture
def flowers_root(tmp_path) -> Path:
    """flowers-102/ with 8 classes (labels 1..8) of 2 or 3 JPEGs and imagelabels.mat."""
    scipy_io = pytest.importorskip("scipy.io")
    base = tmp_path / "flowers-102"
    labels = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 3]    # class 3 has three images
    for k, label in enumerate(labels, start=1):
        write_image(base / "jpg" / f"image_{k:05d}.jpg", (label * 30, 100, 50))
    scipy_io.savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    return tmp_path


def test_flowers_reads_the_torchvision_layout(flowers_root):
    everything = flowers102("all", image_size=12, root=flowers_root)
    assert everything.names == [f"flower_{c:03d}" for c in range(1, 9)]
    assert everything.counts.tolist() == [2, 2, 3, 2, 2, 2, 2, 2]
    assert everything.images.shape == (17, 3, 12, 12)
    red = everything.images[:, 0].float().mean((1, 2))
    expected = torch.tensor([c * 30 for c in (1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8)], dtype=torch.float32)
    assert (red - expected).abs().max() < 6      # JPEG keeps flat colours within a few levels
    assert flowers102("test", image_size=12, root=flowers_root).names == ["flower_004", "flower_008"]


def test_flowers_missing_files(flowers_root, tmp_path):
    (flowers_root / "flowers-102" / "jpg" / "image_00003.jpg").unlink()
    with pytest.raises(DataNotFoundError, match="missing"):
        flowers102("all", root=flowers_root)
    with pytest.raises(DataNotFoundError, match="download=True"):
        flowers102(root=tmp_path / "elsewhere")


def toy_alphabets() -> ClassImages:
    """Three alphabets of 6, 4 and 2 characters, 5 drawings each; pixel value = class index."""
    names = [f"A/c{k}" for k in range(6)] + [f"B/c{k}" for k in range(4)] + [f"C/c{k}" for k in range(2)]
    grouped = torch.arange(12, dtype=torch.uint8).reshape(12, 1, 1, 1, 1).expand(12, 5, 1, 2, 2).clone()
    return ClassImages.from_grouped(grouped, names)


def test_grouped_sampler_draws_within_one_group():
    classes = toy_alphabets()
    sampler = GroupedEpisodeSampler(classes, alphabet_of, ways=4, shots=1, queries=2, seed=0)
    assert sorted(sampler.groups) == ["A", "B"]                     # C has too few characters
    seen = set()
    for _ in range(30):
        episode = sampler.sample()
        ids = (episode.x_support[:, 0, 0, 0] * 255).round().long()
        groups = {alphabet_of(classes.names[i]) for i in ids.tolist()}
        assert len(groups) == 1 and len(set(ids.tolist())) == 4
        query_ids = (episode.x_query[:, 0, 0, 0] * 255).round().long()
        assert query_ids.tolist() == ids.repeat_interleave(2).tolist()   # labels follow the drawn classes
        seen |= groups
    assert seen == {"A", "B"}
    first, second = (GroupedEpisodeSampler(classes, alphabet_of, 4, 1, 2, seed=3).sample() for _ in range(2))
    torch.testing.assert_close(first.x_support, second.x_support)     # same seed, same episode


def test_grouped_sampler_rejects_too_many_ways():
    with pytest.raises(ValueError, match="largest has 6"):
        GroupedEpisodeSampler(toy_alphabets(), alphabet_of, ways=7, shots=1, queries=1)
