"""The front end as a user meets it: help, version, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner
from wsi_ccrl_cli.main import cli

from wsi_ccrl import __version__

COMMANDS = ("segment", "train", "label", "benchmark")


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_torch():
    """`wsi-ccrl --help` must answer at once: no torch or TIAToolbox import behind it."""
    code = (
        "import sys; from click.testing import CliRunner; from wsi_ccrl_cli.main import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
        "print(sorted(m for m in ('torch', 'tiatoolbox', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "--config" in result.output


def test_unknown_option_is_a_usage_error():
    result = CliRunner().invoke(cli, ["train", "--epoch", "3"])
    assert result.exit_code == 2 and "No such option" in result.output


@pytest.mark.parametrize(
    "command, section, text, message",
    [
        ("train", "train", "  epochz: 3\n", "unknown key 'epochz'"),
        ("label", "label", "  k: many\n", "expected an integer"),
        ("segment", "segment", "  tile_size: [1]\n", "expected an integer"),
        ("benchmark", "benchmark", "  seeds: 3\n", "expected a list"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, command, section, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{section}:\n{text}")
    args = {
        "train": ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")],
        "label": ["label", "--model", str(bad), "--data", str(tmp_path)],
        "segment": ["segment", str(bad), "--out", str(tmp_path)],
        "benchmark": ["benchmark", "consep", "--data-dir", str(tmp_path)],
    }[command]
    result = CliRunner().invoke(cli, [*args, "--config", str(bad)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(
        cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path), "--config", "nope.yaml"]
    )
    assert result.exit_code == 2 and "nope.yaml" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "missing.svs", "--out", "o"],
        ["train", "--data", "missing", "--out", "o"],
        ["label", "--model", "m.pt", "--data", "missing"],
        ["benchmark", "consep", "--data-dir", "missing"],
    ],
)
def test_device_accepts_cuda_n_and_names_the_choices(args, tmp_path, monkeypatch):
    """``--device`` takes what the configs take (cuda:N included) and refuses the rest in a line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "missing").mkdir()  # an empty folder: no stores, no slides
    bad = CliRunner().invoke(cli, [*args, "--device", "tpu"])
    assert bad.exit_code == 2 and "'tpu' is not auto, cpu, cuda or cuda:N" in bad.output
    gpu = CliRunner().invoke(cli, [*args, "--device", "cuda:1"])
    assert "is not auto, cpu, cuda or cuda:N" not in gpu.output  # parsed; fails later, one line
    assert gpu.exit_code != 0 and len(gpu.output.strip().splitlines()) == 1, gpu.output
