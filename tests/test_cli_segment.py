import yaml
from click.testing import CliRunner
from conftest import SAMPLE_SLIDE
from wsi_ccrl_cli.main import cli

from wsi_ccrl.io.store import CellStore

ROI = "1100,1500,120,120"
FAST = ["--segmenter", "watershed", "--tile-size", "160", "--roi", ROI]


def test_segment_cli_writes_store_and_config(tmp_path):
    out = tmp_path / "out"
    args = ["segment", str(SAMPLE_SLIDE), "--out", str(out), *FAST, "--crop-size", "24"]
    result = CliRunner().invoke(cli, [*args, "--window-scale", "1.5", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    store = CellStore.open(out / "CMU-1-Small-Region.zarr")
    assert store.n_cells > 5 and store.crop_size == 24
    assert store.attrs["crop"]["window_scale"] == 1.5
    saved = yaml.safe_load((out / "segment-config.yaml").read_text())["segment"]
    assert saved["segmenter"] == "watershed" and saved["roi"] == [1100, 1500, 120, 120]
    assert "store:" in result.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "skipped (already complete)" in again.output


def test_segment_cli_bad_inputs_one_line_and_nonzero_exit(no_mpp_slide, tmp_path):
    listing = tmp_path / "slides.txt"
    listing.write_text(f"{SAMPLE_SLIDE}\n{no_mpp_slide}\n{tmp_path / 'missing.svs'}\n")
    result = CliRunner().invoke(cli, ["segment", str(listing), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: 2 slide(s) failed") and "--mpp" in last and "not found" in last
    assert (tmp_path / "o" / "CMU-1-Small-Region.zarr").exists()  # the good slide still ran
    with_mpp = CliRunner().invoke(
        cli, ["segment", str(no_mpp_slide), "--out", str(tmp_path / "o"), *FAST, "--mpp", "1.0"]
    )
    assert with_mpp.exit_code == 0, with_mpp.output


def test_segment_cli_shard_and_usage_errors(tmp_path):
    listing = tmp_path / "slides.txt"
    listing.write_text(f"{tmp_path / 'missing.svs'}\n{SAMPLE_SLIDE}\n")
    out = tmp_path / "o"
    result = CliRunner().invoke(
        cli, ["segment", str(listing), "--out", str(out), *FAST, "--shard", "1/2"]
    )
    assert result.exit_code == 0, result.output  # shard 1 holds only the good slide
    assert (out / "CMU-1-Small-Region.zarr").exists()
    bad = CliRunner().invoke(cli, ["segment", str(SAMPLE_SLIDE), "--out", str(out), "--roi", "1,2"])
    assert bad.exit_code == 1 and "--roi" in bad.output
    bad = CliRunner().invoke(
        cli, ["segment", str(SAMPLE_SLIDE), "--out", str(out), "--shard", "2/2"]
    )
    assert bad.exit_code == 1 and "--shard" in bad.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = CliRunner().invoke(
        cli, ["segment", str(SAMPLE_SLIDE), "--out", str(blocker / "o"), *FAST]
    )
    assert bad.exit_code == 1 and "cannot write to output folder" in bad.output


def test_segment_cli_hovernet_offline_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    from tiatoolbox import rcParam

    monkeypatch.setitem(rcParam, "TIATOOLBOX_HOME", tmp_path / ".tiatoolbox")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["segment", str(SAMPLE_SLIDE), "--out", str(tmp_path / "o"), "--segmenter", "hovernet"]
    result = CliRunner().invoke(cli, [*args, "--offline", "--roi", ROI])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "--weights" in lines[-1]
    assert "--segmenter watershed" in lines[-1]
