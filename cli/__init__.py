"""The ``wsi-ccrl`` command line (installed as the ``wsi_ccrl_cli`` package)."""
