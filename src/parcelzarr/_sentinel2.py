"""Sentinel-2 L2A domain knowledge, in one place (pure): band names and resolutions, the
processing-baseline offset, reflectance scaling and the scene classification (SCL) classes.

Reflectance = (DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE; since processing baseline 04.00
(products from 2022-01-25) BOA_ADD_OFFSET is -1000, before it 0. The store keeps every date
of a band in the current convention (older dates shifted by +1000 DN when ingested).
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "BANDS_10M",
    "BAND_PATTERN",
    "BOA_ADD_OFFSET",
    "DEFAULT_MASK_CLASSES",
    "NATIVE_RESOLUTION",
    "NON_REFLECTANCE",
    "OFFSET_BASELINE",
    "OFFSET_SINCE",
    "QUANTIFICATION_VALUE",
    "STAC_ASSET_PATTERN",
    "boa_offset",
    "reflectance_attrs",
]

#: Band names in file names (``T16TCK_20240615T165849_B04_10m.tif``), as a regex alternation.
BAND_PATTERN = r"B0[1-9]|B1[0-2]|B8A|SCL|AOT|WVP|TCI"
#: Band assets of a STAC item (the true-colour preview ``TCI`` is not ingested).
STAC_ASSET_PATTERN = r"B0[1-9]|B1[0-2]|B8A|SCL|AOT|WVP"
#: The 10 m bands: blue, green, red, near infrared.
BANDS_10M = ("B02", "B03", "B04", "B08")
#: Native pixel size (m) of each band.
NATIVE_RESOLUTION: dict[str, int] = {
    **dict.fromkeys(BANDS_10M, 10),
    **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12", "SCL"), 20),
    **dict.fromkeys(("B01", "B09", "B10"), 60),
}
#: Layers of an L2A product that are not surface reflectance (no offset, no scaling).
NON_REFLECTANCE = ("SCL", "TCI", "AOT", "WVP")
#: DN per unit of reflectance.
QUANTIFICATION_VALUE = 10_000
#: BOA_ADD_OFFSET (DN) of reflectance bands from processing baseline 04.00 on.
BOA_ADD_OFFSET = -1000
#: The first processing baseline with the offset (``N0400`` in product names), ...
OFFSET_BASELINE = 400
#: ... and the first acquisition processed with it (for names that carry no baseline).
OFFSET_SINCE = datetime(2022, 1, 25)
#: SCL classes masked by ``mask="scl"``: no data, saturated/defective, cloud shadow, cloud
#: medium and high probability, thin cirrus.
DEFAULT_MASK_CLASSES = (0, 1, 3, 8, 9, 10)


def boa_offset(band: str, *, baseline: str | None, time: datetime | None) -> int:
    """BOA_ADD_OFFSET in DN of ``band`` in a product of processing ``baseline`` (``"0509"``)
    or, when the baseline is unknown, acquired at ``time``: -1000 from 04.00 on, else 0.

    >>> boa_offset("B04", baseline="0400", time=None), boa_offset("SCL", baseline="0509", time=None)
    (-1000, 0)
    """
    if band in NON_REFLECTANCE:
        return 0
    if baseline is not None:
        return BOA_ADD_OFFSET if int(baseline) >= OFFSET_BASELINE else 0
    if time is not None:
        return BOA_ADD_OFFSET if time >= OFFSET_SINCE else 0
    return 0


def reflectance_attrs(band: str) -> dict[str, object]:
    """Array attributes of a reflectance band in the store's DN convention (CF scaling that
    xarray decodes), or ``{}`` for the non-reflectance layers."""
    if band in NON_REFLECTANCE:
        return {}
    return {"scale_factor": 1 / QUANTIFICATION_VALUE,
            "add_offset": BOA_ADD_OFFSET / QUANTIFICATION_VALUE,
            "BOA_ADD_OFFSET": BOA_ADD_OFFSET, "units": "1",
            "long_name": f"{band} surface reflectance",
            "dn_convention": "processing baseline >= 04.00 (BOA_ADD_OFFSET -1000); older "
                             "dates were shifted by +1000 DN when ingested"}
