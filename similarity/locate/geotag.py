"""Geotagged copies: a photo's bytes with a GPS EXIF block put in, the image data untouched.

The copy is made by splicing, not by re-encoding: in a JPEG the Exif APP1
segment is replaced (or added after SOI/JFIF), in a PNG the ``eXIf`` chunk
(added before the first IDAT); every other byte stays as it was, so the
pixels, ICC profile and other metadata are those of the original. The
photo's other EXIF tags are kept; only the GPS IFD is written.
"""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction

from PIL import ExifTags, Image

EXIF_HEADER = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SEGMENT_PAYLOAD = 65533  # a JPEG segment's length field counts itself: 2 + payload <= 65535


class GeotagError(Exception):
    """This photo cannot be geotagged without re-encoding it; the message says why."""


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    """Degrees, minutes and seconds (to 1/10000 s, about 3 mm) as EXIF rationals."""
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return Fraction(degrees), Fraction(minutes), Fraction(round(seconds * 10000), 10000)


def gps_exif(original: bytes, latitude: float, longitude: float) -> Image.Exif:
    """The original's EXIF (when readable) with a GPS IFD holding this position."""
    try:
        with Image.open(io.BytesIO(original)) as image:
            exif = image.getexif()
    except Exception:  # unreadable EXIF: the copy gets a fresh block with the position only
        exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        ExifTags.GPS.GPSLatitude: _dms(latitude),
        ExifTags.GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        ExifTags.GPS.GPSLongitude: _dms(longitude),
        ExifTags.GPS.GPSMapDatum: "WGS-84",
    }
    return exif


def _exif_block(exif: Image.Exif) -> bytes:
    """The TIFF-structured EXIF, with the ``Exif\\0\\0`` header."""
    data = exif.tobytes()
    return data if data.startswith(EXIF_HEADER) else EXIF_HEADER + data


def _jpeg_with_exif(original: bytes, block: bytes) -> bytes:
    if len(block) > MAX_SEGMENT_PAYLOAD:
        raise GeotagError("its EXIF would not fit one JPEG segment (64 KiB)")
    segment = b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
    kept, position, insert_at = [original[:2]], 2, 1
    while True:
        if position + 4 > len(original) or original[position] != 0xFF:
            raise GeotagError("its JPEG markers are broken")
        marker = original[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            kept.append(original[position : position + 1])
            position += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:  # start of scan (or no length): the rest is image data
            break
        (length,) = struct.unpack(">H", original[position + 2 : position + 4])
        end = position + 2 + length
        if length < 2 or end > len(original):
            raise GeotagError("a JPEG segment runs past the end of the file")
        payload = original[position + 4 : end]
        if not (marker == 0xE1 and payload.startswith(EXIF_HEADER)):  # the old Exif segment is replaced
            kept.append(original[position:end])
            if marker == 0xE0 and len(kept) == 2:  # JFIF's APP0 must stay first: Exif goes after it
                insert_at = len(kept)
        position = end
    kept.insert(insert_at, segment)
    return b"".join(kept) + original[position:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_exif(original: bytes, block: bytes) -> bytes:
    chunk = _png_chunk(b"eXIf", block[len(EXIF_HEADER) :])
    kept, position, placed = [PNG_SIGNATURE], len(PNG_SIGNATURE), False
    while position < len(original):
        if position + 8 > len(original):
            raise GeotagError("its PNG chunks are broken")
        length, kind = struct.unpack(">I4s", original[position : position + 8])
        end = position + 12 + length
        if end > len(original):
            raise GeotagError("a PNG chunk runs past the end of the file")
        if kind == b"IDAT" and not placed:
            kept.append(chunk)
            placed = True
        if kind != b"eXIf":
            kept.append(original[position:end])
        position = end
    if not placed:
        raise GeotagError("the PNG has no image data")
    return b"".join(kept)


def geotagged_copy(original: bytes, latitude: float, longitude: float) -> bytes:
    """The original's bytes with GPS EXIF for this position (JPEG and PNG); GeotagError when it cannot be."""
    block = _exif_block(gps_exif(original, latitude, longitude))
    if original.startswith(b"\xff\xd8"):
        return _jpeg_with_exif(original, block)
    if original.startswith(PNG_SIGNATURE):
        return _png_with_exif(original, block)
    raise GeotagError("GPS is written into JPEG and PNG copies only")
