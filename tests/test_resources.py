"""The files shipped inside the package: found through importlib.resources, not the source tree."""

import pytest
from conftest import CONFIGS, SAMPLE_SLIDE

from wsi_ccrl import resources
from wsi_ccrl.config import SECTION_TYPES, load_section
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.slide import Slide


def test_sample_slide_and_profiles_are_package_data():
    assert resources.sample_slide().samefile(SAMPLE_SLIDE)
    with Slide.open(resources.sample_slide()) as slide:
        assert slide.dimensions == (2220, 2967)
    assert resources.profiles() == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert {"ccrl", "quick", "benchmark-consep-quick"} <= set(resources.profiles())
    # the installed package's copy (editable: the checkout's; a wheel: its own), same bytes
    assert resources.profile("quick").read_bytes() == (CONFIGS / "quick.yaml").read_bytes()
    assert resources.profile("ccrl.yaml").read_bytes() == (CONFIGS / "ccrl.yaml").read_bytes()


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_profile_is_found_by_name_and_loads(name, tmp_path, monkeypatch):
    """Each file of configs/ is found through the installed ``wsi_ccrl_configs`` package, from any
    folder, and every section of it loads."""
    monkeypatch.chdir(tmp_path)
    assert resources.profile(name).read_bytes() == (CONFIGS / f"{name}.yaml").read_bytes()
    for section in SECTION_TYPES:
        load_section(section, name)


def test_unknown_profile_is_one_line():
    with pytest.raises(WsiCcrlError, match=r"no config profile 'fast' \(shipped: benchmark-"):
        resources.profile("fast")
    with pytest.raises(WsiCcrlError, match="missing from this installation"):
        resources.bundled("data", "nothing.svs")
