"""A checker for GeoJSON meant for QuPath, written from QuPath's own reader (qupath-core 0.4.4,
0.5.1 and 0.6.0: ``PathIO.readObjects``, ``PathObjectTypeAdapters``, ``GsonTools``,
``ROITypeAdapters``, ``PathClass``, ``GeometryTools``).

Each rule below names what QuPath does with a file that breaks it. ``check_qupath_geojson``
raises ``AssertionError`` naming the first feature and rule broken, and returns a summary.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import uuid
from collections import Counter
from pathlib import Path

import shapely
from shapely.geometry import shape

# PathObjectTypeAdapter: "id" values QuPath 0.2 used for the type, read as a type, not an id
LEGACY_TYPE_IDS = {
    "PathTileObject", "PathCellObject", "TMACoreObject", "PathDetectionObject", "PathRootObject",
    "PathAnnotationObject",
}  # fmt: skip
# the properties QuPath reads; anything else is silently dropped
READ_PROPERTIES = {"objectType", "name", "color", "classification", "isLocked", "measurements"}
# what "Add shape features" writes on detections: ours must not clash with these
QUPATH_SHAPE_FEATURES = {
    "Area \u00b5m^2", "Area px^2", "Perimeter \u00b5m", "Perimeter px", "Circularity", "Solidity",
    "Max diameter \u00b5m", "Min diameter \u00b5m", "Max diameter px", "Min diameter px",
    "Length \u00b5m", "Length px",
}  # fmt: skip
# PathClass.validateNameCharacters: letters, digits, punctuation and spaces (else a warning that
# "this may fail on later QuPath versions")
_PUNCT = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
CLASS_NAME = re.compile(rf"^[\w{_PUNCT} ]+$")
GRID = 100  # QuPath 0.6 reduces every geometry to PrecisionModel(100)


def check_qupath_geojson(path: str | Path) -> dict:
    """Check a ``.geojson`` / ``.geojson.gz`` file; returns counts of what QuPath would create."""
    path = Path(path)
    name = path.name.lower()
    # PathIO.readObjects: .geojson / .json, and from 0.4 the same gzipped
    assert name.endswith((".geojson", ".json", ".geojson.gz", ".json.gz")), f"{path}: extension"
    raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
    # QuPath < 0.5 reads with the platform's charset: only ASCII is read the same everywhere
    assert raw.isascii(), f"{path}: not ASCII; QuPath may misread names on some platforms"
    data = json.loads(raw, parse_constant=_refuse)  # NaN / Infinity are not JSON
    # PathObjectCollectionTypeAdapter: obj.features must be an array
    assert data.get("type") == "FeatureCollection", "top level: not a FeatureCollection"
    features = data.get("features")
    assert isinstance(features, list), "top level: 'features' is not an array"
    ids: Counter = Counter()
    kinds: Counter = Counter()
    classes: dict = {}
    measurement_names: set = set()
    for i, feat in enumerate(features):
        where = f"feature {i}"
        assert isinstance(feat, dict) and feat.get("type") == "Feature", f"{where}: not a Feature"
        ids[_check_id(feat, where)] += 1
        kinds[_check_geometry(feat.get("geometry"), where)] += 1
        props = feat.get("properties")
        assert isinstance(props, dict), f"{where}: no properties (QuPath makes an annotation)"
        unread = set(props) - READ_PROPERTIES
        assert not unread, f"{where}: properties {sorted(unread)} are ignored by QuPath"
        # objectType: anything but "detection" (or "cell"/"tile") becomes an annotation
        assert props.get("objectType") == "detection", f"{where}: objectType is not 'detection'"
        if "name" in props:
            assert isinstance(props["name"], str), f"{where}: name is not a string"
        if "isLocked" in props:
            assert isinstance(props["isLocked"], bool), f"{where}: isLocked is not a boolean"
        if "color" in props:
            _check_rgb(props["color"], f"{where}: color")
        cls = _check_classification(props.get("classification"), where)
        if cls[0] in classes:  # one colour per class: PathClass is a singleton
            assert classes[cls[0]] == cls[1], f"{where}: class {cls[0]!r} with two colours"
        classes[cls[0]] = cls[1]
        measurement_names |= _check_measurements(props.get("measurements"), where)
    dup = [k for k, v in ids.items() if v > 1]
    # QuPath >= 0.4 asks to replace duplicate ids on import
    assert not dup, f"{len(dup)} duplicate ids, e.g. {dup[0]}"
    clash = measurement_names & QUPATH_SHAPE_FEATURES
    assert not clash, f"measurements {sorted(clash)} clash with QuPath's shape features"
    return {
        "features": len(features),
        "geometries": dict(kinds),
        "classes": classes,
        "measurements": sorted(measurement_names),
    }


def _refuse(token: str):
    raise AssertionError(f"{token} in the file: not JSON, and not a number QuPath keeps")


def _check_id(feat: dict, where: str) -> str:
    # from 0.4 the id is the object's UUID (UUID.fromString); anything else is dropped
    fid = feat.get("id")
    assert isinstance(fid, str), f"{where}: no string id"
    assert fid not in LEGACY_TYPE_IDS, f"{where}: id {fid!r} is read as a 0.2 object type"
    assert str(uuid.UUID(fid)) == fid.lower(), f"{where}: id {fid!r} is not a UUID"
    return fid


def _check_geometry(geom, where: str) -> str:
    assert isinstance(geom, dict), f"{where}: no geometry"
    kind = geom.get("type")
    # a detection's ROI is an area here: Polygon or MultiPolygon (0.6 reads both)
    assert kind in ("Polygon", "MultiPolygon"), f"{where}: geometry type {kind!r}"
    assert "plane" not in geom and "isEllipse" not in geom, f"{where}: plane / ellipse members"
    polygons = geom["coordinates"] if kind == "MultiPolygon" else [geom["coordinates"]]
    assert polygons, f"{where}: empty geometry"
    for rings in polygons:
        assert rings, f"{where}: a polygon without rings"
        for ring in rings:
            # JTS LinearRing: closed, at least 4 positions, each [x, y] numbers
            assert len(ring) >= 4, f"{where}: a ring of {len(ring)} positions (JTS needs 4)"
            assert ring[0] == ring[-1], f"{where}: a ring that is not closed"
            for pos in ring:
                assert len(pos) == 2 and all(isinstance(v, (int, float)) for v in pos), where
                # 0.6 snaps to a 0.01 grid: coordinates already on it do not move
                assert all(abs(v * GRID - round(v * GRID)) < 1e-6 for v in pos), (
                    f"{where}: coordinate {pos} is not on QuPath's 0.01 px grid"
                )
    # 0.6: GeometryPrecisionReducer fails on invalid input and aborts the whole import
    g = shape(geom)
    assert g.is_valid, f"{where}: invalid geometry ({shapely.is_valid_reason(g)})"
    assert g.area > 0, f"{where}: geometry without area"
    return kind


def _check_classification(cls, where: str) -> tuple[str, tuple[int, ...]]:
    # GsonTools.PathClassTypeAdapter: an object with "name" and "color" (a proxy), or a string
    assert isinstance(cls, dict), f"{where}: classification is not an object"
    assert set(cls) == {"name", "color"}, f"{where}: classification keys {sorted(cls)}"
    name = cls["name"]
    assert isinstance(name, str) and name, f"{where}: classification name"
    # PathClass.fromString splits on ':' into a derived class
    assert ":" not in name, f"{where}: class {name!r} would become a derived class"
    # PathClassTools.isIgnoredClass: a trailing '*' is an ignored class
    assert not name.endswith("*"), f"{where}: class {name!r} would be ignored"
    assert name == name.strip(), f"{where}: class {name!r} has spaces QuPath strips"
    assert CLASS_NAME.match(name), f"{where}: class {name!r} has characters QuPath warns about"
    return name, tuple(_check_rgb(cls["color"], f"{where}: classification color"))


def _check_rgb(value, where: str) -> list[int]:
    assert isinstance(value, list) and len(value) == 3, f"{where}: not [r, g, b]"
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in value), f"{where}: {value}"
    return value


def _check_measurements(meas, where: str) -> set[str]:
    if meas is None:
        return set()
    # MeasurementListTypeAdapter: an object read as Map<String, Double>
    assert isinstance(meas, dict), f"{where}: measurements are not an object"
    for key, value in meas.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (
            f"{where}: measurement {key!r} = {value!r} is not a number"
        )
        assert math.isfinite(value), f"{where}: measurement {key!r} is not finite"
    return set(meas)
