import logging

import pytest

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.label.palette import BASE_PALETTE, cluster_styles, load_names, palette


@pytest.mark.parametrize("k", [1, 8, 20, 45])
def test_palette_is_fixed_distinct_and_valid(k):
    colours = palette(k)
    assert colours == palette(k)  # fixed
    assert len(colours) == k and len(set(colours)) == k
    assert all(
        len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours
    )
    assert colours[: min(k, len(BASE_PALETTE))] == list(BASE_PALETTE[:k])


def test_default_styles():
    styles = cluster_styles(3)
    assert styles.names == ("Cluster 0", "Cluster 1", "Cluster 2")
    assert styles.colours == tuple(palette(3))
    assert styles.as_dict()[1] == {"name": "Cluster 1", "color": list(palette(3)[1])}


def test_names_file_renames_and_recolours(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text(
        "0: Lymphocyte\n"
        "2: {name: Tumour, color: [200, 30, 30]}\n"
        "3: {name: Stroma, color: '#2CA02C'}\n"
        "'1': {name: 'Endothelial, 50% sure'}\n"
    )
    styles = cluster_styles(4, path)
    assert styles.names == ("Lymphocyte", "Endothelial, 50% sure", "Tumour", "Stroma")
    assert styles.colours == (palette(4)[0], palette(4)[1], (200, 30, 30), (44, 160, 44))


@pytest.mark.parametrize(
    "text, message",
    [
        ("0: [a\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("", "expected a mapping"),
        ("4: Tumour\n", r"not in 0\.\.3"),
        ("-1: Tumour\n", r"not in 0\.\.3"),
        ("x: Tumour\n", "is not a cluster id"),
        ("0: {name: A, color: [300, 0, 0]}\n", "color must be"),
        ("0: {name: A, color: red}\n", "color must be"),
        ("0: {name: A, colour: [1, 2]}\n", "color must be"),
        ("0: {name: A, shape: round}\n", "unknown key 'shape'"),
        ("0: ''\n", "non-empty string"),
        ("0: 5\n", "expected a name"),
        ("0: Same\n1: Same\n", "used twice"),
    ],
)
def test_bad_names_file_gives_one_line(tmp_path, text, message):
    path = tmp_path / "names.yaml"
    path.write_text(text)
    with pytest.raises(WsiCcrlError, match=message) as info:
        cluster_styles(4, path)
    assert "\n" not in str(info.value)


def test_missing_names_file(tmp_path):
    with pytest.raises(WsiCcrlError, match="cannot read names file"):
        load_names(tmp_path / "nope.yaml", 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0: 'Tumour: CD8'\n", "contains ':'.*derived class"),
        ("0: {name: 'Immune*'}\n", r"ends with '\*'.*ignored class"),
        ('0: "Two\\nlines"\n', "line break"),
    ],
)
def test_names_qupath_would_misread_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "names.yaml"
    path.write_text(text)
    with pytest.raises(WsiCcrlError, match=message) as info:
        cluster_styles(2, path)
    assert "\n" not in str(info.value).replace("\\n", "")
    assert "cluster 0" in str(info.value)


def test_builtin_qupath_class_names_warn_but_pass(tmp_path, caplog):
    path = tmp_path / "names.yaml"
    path.write_text("0: {name: Tumor, color: [1, 2, 3]}\n1: Tumour\n")
    logger = logging.getLogger("wsi_ccrl")  # the CLI may stop it propagating: listen on it
    propagate = logger.propagate
    logger.addHandler(caplog.handler)
    logger.propagate = False
    try:
        styles = cluster_styles(2, path)
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert styles.names == ("Tumor", "Tumour")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "'Tumor' is a built-in QuPath class" in warned[0]
