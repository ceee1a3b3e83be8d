"""The shipped config profiles, installed as ``wsi_ccrl_configs`` so the wheel carries them."""
