"""Given reference folder layouts, the data sets yield the reference's crops, pairs and clear errors."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gantk.data import AlignedDataset, EpochSampler, SingleDataset, UnalignedDataset
from gantk.data.transforms import transform
from gantk.errors import DataError
from gantk.io import load_image, to_8bit
from gantk.models.cyclegan import CycleGANConfig


def cfg(root, **kw):
    return CycleGANConfig(dataroot=str(root), load_size=36, crop_size=32, **kw)


def test_transform_sizes_and_range():
    img = Image.new("RGB", (50, 30), (255, 0, 0))
    x = transform(img, "resize_and_crop", 36, 32, None)
    assert x.shape == (3, 32, 32) and x[0].min() == 1.0 and x[1].max() == -1.0
    assert transform(img, "none", 36, 32, None).shape == (3, 32, 48)  # rounded (half to even) to multiples of 4
    assert transform(img, "scale_width", 40, 32, None).shape == (3, 32, 40)


def test_unaligned_items_are_reproducible_per_epoch(sample_data):
    ds = UnalignedDataset(cfg(sample_data["unaligned"]))
    assert len(ds) == 40
    item = ds[3]
    assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)
    assert -1 <= item["A"].min() and item["A"].max() <= 1
    assert torch.equal(ds[3]["A"], item["A"]) and ds[3]["B_paths"] == item["B_paths"]
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["A"], item["A"]) or ds[3]["B_paths"] != item["B_paths"]
    serial = UnalignedDataset(cfg(sample_data["unaligned"], serial_batches=True))
    assert serial[5]["B_paths"].endswith("005.png")


def test_aligned_splits_left_right_with_one_crop(tmp_path):
    root = tmp_path / "pairs" / "train"
    root.mkdir(parents=True)
    ab = Image.new("RGB", (80, 40), (255, 0, 0))
    ab.paste((0, 0, 255), (40, 0, 80, 40))
    ab.save(root / "0.png")
    item = AlignedDataset(cfg(tmp_path / "pairs", dataset_mode="aligned"))[0]
    assert item["A"][0].mean() == 1 and item["A"][2].mean() == -1  # red left half -> A
    assert item["B"][2].mean() == 1 and item["B"][0].mean() == -1  # blue right half -> B


def test_single_folder(sample_data):
    ds = SingleDataset(cfg(sample_data["unaligned"]), folder=sample_data["unaligned"] / "testA")
    assert len(ds) == 8 and ds[0]["A"].shape == (3, 32, 32)


@pytest.fixture
def broken_set(sample_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(sample_data["unaligned"], root)
    (root / "trainA" / "000.png").write_bytes(b"\x89PNG garbage")            # header unreadable
    data = (root / "trainA" / "001.png").read_bytes()
    (root / "trainA" / "001.png").write_bytes(data[: len(data) // 2])        # truncated body
    return root


def test_bad_images_fail_naming_the_file(broken_set):
    with pytest.raises(DataError, match=r"trainA/000.png: cannot read image.*--bad_images skip"):
        UnalignedDataset(cfg(broken_set))


def test_bad_images_skipped_with_warning(broken_set, caplog):
    ds = UnalignedDataset(cfg(broken_set, bad_images="skip", serial_batches=True))
    assert len(ds.A_paths) == 39 and "000.png" in caplog.text
    item = ds[0]  # 001.png (truncated) is index 0 now: skipped at load time, the next one is used
    assert item["A_paths"].endswith("002.png") and "001.png" in caplog.text


def test_truncated_image_fails_at_load_naming_the_file(broken_set):
    (broken_set / "trainA" / "000.png").unlink()  # leave only the truncated file: the header scan passes
    ds = UnalignedDataset(cfg(broken_set, serial_batches=True))
    with pytest.raises(DataError, match=r"trainA/001.png: cannot read image \(image file is truncated"):
        ds[0]


def test_epoch_sampler_partitions_and_resumes():
    s0, s1 = EpochSampler(7, True, 3, rank=0, world_size=2), EpochSampler(7, True, 3, rank=1, world_size=2)
    both = list(s0) + list(s1)
    assert len(both) == 8 and set(both) == set(range(7))  # padded to equal shares
    single = EpochSampler(7, True, 3)
    order = list(single)
    single.set_epoch(0, start=3)
    assert list(single) == order[3:] and len(single) == 4
    single.set_epoch(1)
    assert list(single) != order


def test_16_bit_grey_loads_as_the_8_bit_image(tmp_path):
    """A 16-bit gradient (PNG and TIFF, Pillow mode I;16) is scaled to 8 bits, not clipped to white."""
    ramp = (np.arange(64 * 16, dtype=np.uint16).reshape(16, 64) * 64)
    for suffix in ("png", "tif"):
        Image.fromarray(ramp).save(tmp_path / f"g.{suffix}")
        with Image.open(tmp_path / f"g.{suffix}") as img:
            assert img.mode == "I;16"
        got = np.asarray(load_image(tmp_path / f"g.{suffix}"), dtype=np.int32)
        assert got.shape == (16, 64, 3) and np.abs(got[..., 0] - ramp // 257).max() <= 1


@pytest.mark.parametrize("mode,values,want", [
    ("I", [0, 1000, 65535], [0, 4, 255]),       # 16-bit range: / 257
    ("I", [0, 100, 255], [0, 100, 255]),        # 8-bit range: as it is
    ("I", [-100, 0, 100], [0, 128, 255]),       # anything else: min..max stretched
    ("F", [0.0, 0.5, 1.0], [0, 128, 255]),      # float in [0, 1]: x 255
])
def test_deep_grey_modes_follow_the_documented_rule(mode, values, want):
    img = Image.fromarray(np.array([values], dtype=np.int32 if mode == "I" else np.float32))
    assert img.mode == mode
    assert np.asarray(to_8bit(img)).tolist() == [want]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # blue left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    got = load_image(tmp_path / "r.jpg")
    assert got.size == (20, 40)
    assert got.getpixel((10, 5))[2] > 200 and got.getpixel((10, 35))[0] > 200  # blue is on top now


def test_decompression_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch):
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the error comes above twice this
    with pytest.raises(DataError, match=r"big.png: Image size \(1024 pixels\) exceeds limit of 200 pixels.*"
                                        r"set GANTK_ALLOW_LARGE_IMAGES=1") as e:
        load_image(tmp_path / "big.png")
    assert "\n" not in str(e.value)
