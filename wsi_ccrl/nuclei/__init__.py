"""The embedded nucleus model: a compact U-Net (``net``), its training on CoNSeP (``train``) and the
watershed that turns its maps into nuclei (``postprocess``). ``wsi_ccrl.segment.embedded`` serves it
as the ``embedded`` segmenter with the weights shipped in ``wsi_ccrl/weights``."""

from wsi_ccrl.nuclei.net import NucleusUNet, build_net
from wsi_ccrl.nuclei.postprocess import PostprocessConfig, instance_probs, maps_to_instances

__all__ = ["NucleusUNet", "PostprocessConfig", "build_net", "instance_probs", "maps_to_instances"]
