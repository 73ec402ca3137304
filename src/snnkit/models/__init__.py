"""Model builders (MLP, ConvNet, VGG; the seed papers' VGG-11/16, ResNet-19, SEW-ResNet-18/34, WRN-16-4), the
SpikingModel wrapper and model files."""
from snnkit.models.build import ARCHS, DEFAULTS, build, vgg_config
from snnkit.models.io import ModelFileError, load, save
from snnkit.models.spiking import RunResult, SpikingModel

__all__ = ["ARCHS", "DEFAULTS", "ModelFileError", "RunResult", "SpikingModel", "build", "load", "save", "vgg_config"]
