"""Data sets, transforms and the offline sample-data builder."""
from gantk.data.datasets import (AlignedDataset, EpochSampler, SingleDataset, UnalignedDataset,
                                 check_images, make_dataset)

__all__ = ["AlignedDataset", "EpochSampler", "SingleDataset", "UnalignedDataset", "check_images", "make_dataset"]
