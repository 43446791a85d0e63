"""Model families (the registry), the reference factories, and the one generator loader."""
from gantk.models.loading import load, load_generator
from gantk.models.networks import NETD_NAMES, NETG_NAMES, define_D, define_G
from gantk.nn.generators import size_multiple
from gantk.models.registry import FAMILIES, get_family, get_model_class
from gantk.nn.inference import prepare_for_inference

__all__ = ["FAMILIES", "NETD_NAMES", "NETG_NAMES", "define_D", "define_G", "get_family", "get_model_class", "load",
           "load_generator", "prepare_for_inference", "size_multiple"]
