"""wsi-ccrl: label every cell of H&E whole-slide images by unsupervised cell type (CCRL)."""

__version__ = "0.1.0"
