"""Generators of test images: phone photos full of metadata, hostile files and plain pictures.

Every generator is deterministic (same arguments, same bytes) and builds its file in memory.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import ExifTags, ImageCms
from PIL import Image as PillowImage
from PIL.PngImagePlugin import PngInfo
from PIL.TiffImagePlugin import IFDRational

# The colours of phone_jpeg's picture: a red block in the top-left corner of the stored pixels,
# on a blue background, so a test can tell where the corner went after orientation.
RED = (220, 20, 30)
BLUE = (30, 60, 200)
# The red block covers this fraction of the stored width and of the stored height.
BLOCK_FRACTION = 1 / 3

# What phone_jpeg writes into its metadata; none of it may reach a served rendition.
CAMERA_MAKE = "Meshcam"
CAMERA_MODEL = "Meshcam MC-1 Pro"
BODY_SERIAL = "SN-4815162342"
# Degrees, minutes, seconds as reduced fractions (EXIF stores them as written).
GPS_LATITUDE = ((52, 1), (31, 1), (617, 50))
GPS_LONGITUDE = ((13, 1), (24, 1), (2839, 50))
COMMENT = b"Taken in the back garden"
XMP_SECRET = "Back garden, 12 Example Road"
IPTC_CITY = b"Exampleton"
PNG_TEXT = "Location: 52.5200 N, 13.4050 E"
GIF_COMMENT = b"frame comment from the camera"


def srgb_icc() -> bytes:
    """The bytes of an sRGB ICC profile, as phones embed one."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    # littlecms stamps the creation time into the header (bytes 24-35); a fixed date keeps
    # the profile, and every file that embeds it, the same from run to run.
    profile[24:36] = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
    return bytes(profile)


def gps_latitude_bytes() -> bytes:
    """GPS_LATITUDE as the big-endian ("MM") rationals Pillow's EXIF block stores."""
    return struct.pack(">6I", *(part for rational in GPS_LATITUDE for part in rational))


def phone_jpeg(
    width: int = 1600,
    height: int = 1200,
    *,
    orientation: int = 6,
    with_gps: bool = True,
    with_icc: bool = True,
    with_xmp: bool = True,
    with_comment: bool = True,
    with_iptc: bool = True,
) -> bytes:
    """A JPEG as a phone writes it: width x height stored pixels (red block top-left on blue),
    EXIF with Orientation, camera Make/Model/BodySerialNumber and (with_gps) GPS latitude and
    longitude, plus optional XMP packet, ICC profile, COM comment and IPTC (APP13) record."""
    picture = PillowImage.new("RGB", (width, height), BLUE)
    block = (max(1, int(width * BLOCK_FRACTION)), max(1, int(height * BLOCK_FRACTION)))
    picture.paste(RED, (0, 0, *block))

    exif = PillowImage.Exif()
    exif[ExifTags.Base.Make] = CAMERA_MAKE
    exif[ExifTags.Base.Model] = CAMERA_MODEL
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.BodySerialNumber] = BODY_SERIAL
    if with_gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(
            {
                ExifTags.GPS.GPSLatitudeRef: "N",
                ExifTags.GPS.GPSLatitude: _rationals(GPS_LATITUDE),
                ExifTags.GPS.GPSLongitudeRef: "E",
                ExifTags.GPS.GPSLongitude: _rationals(GPS_LONGITUDE),
            }
        )
    options: dict[str, object] = {"exif": exif.tobytes(), "quality": 90}
    if with_icc:
        options["icc_profile"] = srgb_icc()
    if with_xmp:
        options["xmp"] = _xmp_packet()
    if with_comment:
        options["comment"] = COMMENT
    if with_iptc:
        options["extra"] = _iptc_segment()
    return _save(picture, "JPEG", **options)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG (valid chunks and CRCs) declaring a width x height greyscale canvas; its
    zlib stream of zeros holds only the first row, but decoding would allocate the canvas."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # One row: a filter-type byte then width zero pixels.
    pixels = zlib.compress(bytes(1 + width), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def huge_declared_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(jpeg(16, 16))
    start = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    struct.pack_into(">HH", data, start + 5, height, width)
    return bytes(data)


def truncated_jpeg() -> bytes:
    """A JPEG of noise cut off two thirds of the way through its scan data."""
    data = noise_image_bytes("JPEG", 256, 192, quality=90)
    return data[: len(data) * 2 // 3]


def png_with_alpha(width: int = 64, height: int = 48) -> bytes:
    """An RGBA PNG: the left half opaque red, the right half fully transparent; it carries a
    tEXt chunk (PNG_TEXT) that must not reach any rendition."""
    picture = PillowImage.new("RGBA", (width, height), (0, 0, 0, 0))
    picture.paste((*RED, 255), (0, 0, width // 2, height))
    text = PngInfo()
    text.add_text("Comment", PNG_TEXT)
    return _save(picture, "PNG", pnginfo=text)


def cmyk_jpeg(width: int = 64, height: int = 48) -> bytes:
    """A CMYK JPEG (as print workflows export) of pure cyan, without an ICC profile."""
    return _save(PillowImage.new("CMYK", (width, height), (255, 0, 0, 0)), "JPEG", quality=95)


def animated_gif(width: int = 40, height: int = 30) -> bytes:
    """A looping three-frame GIF (red, green, blue frames) with a comment extension."""
    frames = [
        PillowImage.new("RGB", (width, height), colour) for colour in (RED, (0, 200, 0), BLUE)
    ]
    return _save(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        comment=GIF_COMMENT,
    )


def jpeg(width: int = 64, height: int = 48, colour: tuple[int, int, int] = BLUE) -> bytes:
    """A plain single-colour JPEG without metadata."""
    return _save(PillowImage.new("RGB", (width, height), colour), "JPEG", quality=90)


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = BLUE) -> bytes:
    """A plain single-colour RGB PNG."""
    return _save(PillowImage.new("RGB", (width, height), colour), "PNG")


def gif(width: int = 64, height: int = 48, colour: tuple[int, int, int] = BLUE) -> bytes:
    """A plain single-colour, single-frame GIF."""
    return _save(PillowImage.new("RGB", (width, height), colour), "GIF")


def webp(width: int = 64, height: int = 48, colour: tuple[int, int, int] = BLUE) -> bytes:
    """A plain single-colour lossy WebP."""
    return _save(PillowImage.new("RGB", (width, height), colour), "WEBP", quality=90)


def noise_image_bytes(fmt: str, width: int, height: int, **options: object) -> bytes:
    """A width x height picture of random pixels (seeded by its size) encoded as fmt (any
    format Pillow writes, e.g. "BMP" or "TIFF" for types that must be refused)."""
    noise = random.Random(f"{fmt}{width}x{height}").randbytes(width * height * 3)
    return _save(PillowImage.frombytes("RGB", (width, height), noise), fmt, **options)


def noise_jpeg(megabytes: float = 10, *, seed: int = 0) -> bytes:
    """A phone-photo-sized 4:3 JPEG (quality 95, 4:2:0) of about `megabytes` MB (10**6 bytes):
    noise compresses as poorly as a detailed photo, so 10 MB is roughly 12 megapixels."""
    # Softened noise: full-range noise needs fewer, bigger-than-life bytes per pixel.
    lut = [64 + value * 112 // 256 for value in range(256)] * 3

    def encoded(width: int, height: int) -> bytes:
        noise = random.Random(seed).randbytes(width * height * 3)
        picture = PillowImage.frombytes("RGB", (width, height), noise).point(lut)
        return _save(picture, "JPEG", quality=95, subsampling="4:2:0")

    # Bytes per pixel of a sample, then the canvas that gives the wanted file size.
    sample_width, sample_height = 800, 600
    per_pixel = len(encoded(sample_width, sample_height)) / (sample_width * sample_height)
    pixels = megabytes * 1_000_000 / per_pixel
    height = max(3, round((pixels * 3 / 4) ** 0.5))
    return encoded(max(4, round(height * 4 / 3)), height)


def _save(picture: PillowImage.Image, fmt: str, **options: object) -> bytes:
    """Encode picture as fmt in memory."""
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def _rationals(parts: tuple[tuple[int, int], ...]) -> tuple[IFDRational, ...]:
    """EXIF rationals from (numerator, denominator) pairs."""
    return tuple(IFDRational(numerator, denominator) for numerator, denominator in parts)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC over type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _xmp_packet() -> bytes:
    """An XMP packet naming a place and GPS position, as photo apps write."""
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
        f'exif:GPSLatitude="52,31.2N" photoshop:Location="{XMP_SECRET}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def _iptc_segment() -> bytes:
    """An APP13 (Photoshop IRB) segment holding an IPTC record with a city name."""
    # IPTC dataset 2:90 (City): tag marker, record, dataset, length, value.
    dataset = b"\x1c\x02\x5a" + struct.pack(">H", len(IPTC_CITY)) + IPTC_CITY
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(dataset))
    resource += dataset + (b"\x00" if len(dataset) % 2 else b"")
    body = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body
