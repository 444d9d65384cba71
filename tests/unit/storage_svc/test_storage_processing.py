"""Upload processing: only real images get through, and what is served is upright, resized,
re-encoded and free of every piece of metadata but the colour profile."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import blurhash  # type: ignore[import-untyped]
import pytest
from PIL import Image as PillowImage
from PIL import ImageFile, JpegImagePlugin

from meshkit.errors import InvalidArgument
from meshkit.reasons import Reason
from storage_svc.processing import (
    FORMATS,
    MAX_VARIANT_SIDE,
    UNSUPPORTED_HINT,
    VARIANTS,
    ProcessedImage,
    Rendition,
    process,
)
from tests import sample_images

MAX_PIXELS = 40_000_000
PILLOW_FORMATS = {"webp": "WEBP", "jpeg": "JPEG"}
# What a clean rendition may contain: picture data, the JFIF header and the ICC profile.
ALLOWED_JPEG_MARKERS = {0xE0, 0xE2, 0xDB, 0xC4, 0xDD, 0xDA} | set(range(0xC0, 0xD0)) - {0xC8}
ALLOWED_WEBP_CHUNKS = {b"VP8X", b"ICCP", b"VP8 ", b"VP8L", b"ALPH"}


def processed(tmp_path: Path, data: bytes, *, max_pixels: int = MAX_PIXELS) -> ProcessedImage:
    """process() of data written to a file."""
    path = tmp_path / "upload"
    path.write_bytes(data)
    return process(path, max_pixels=max_pixels)


def rejected(tmp_path: Path, data: bytes, *, max_pixels: int = MAX_PIXELS) -> InvalidArgument:
    """The InvalidArgument process() raises for data (always about the field `body`)."""
    with pytest.raises(InvalidArgument) as caught:
        processed(tmp_path, data, max_pixels=max_pixels)
    assert [v.field for v in caught.value.violations] == ["body"]
    return caught.value


def opened(rendition: Rendition) -> PillowImage.Image:
    """A rendition decoded (fully loaded) by Pillow."""
    image = PillowImage.open(io.BytesIO(rendition.data))
    image.load()
    return image


def rendition(result: ProcessedImage, variant: str, fmt: str) -> Rendition:
    """The one rendition of variant in fmt."""
    (found,) = [r for r in result.renditions if (r.variant, r.format) == (variant, fmt)]
    return found


def pixel(image: PillowImage.Image, x: int, y: int) -> tuple[int, ...]:
    """The channel values of image at (x, y)."""
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return tuple(int(channel) for channel in value)


def is_red(channels: tuple[int, ...]) -> bool:
    """Whether a pixel is (JPEG-approximately) phone_jpeg's red."""
    return channels[0] > 150 and channels[1] < 100 and channels[2] < 100


def red_corners(image: PillowImage.Image) -> list[str]:
    """Which corners of image show phone_jpeg's red block (sampled well inside the block)."""
    rgb = image.convert("RGB")
    near, far = 1 / 8, 7 / 8
    points = {
        "top-left": (near, near),
        "top-right": (far, near),
        "bottom-left": (near, far),
        "bottom-right": (far, far),
    }
    return [
        corner
        for corner, (x, y) in points.items()
        if is_red(pixel(rgb, int(x * rgb.width), int(y * rgb.height)))
    ]


def all_close(actual: tuple[int, ...], wanted: tuple[int, ...], tolerance: int) -> bool:
    """Whether every channel of actual is within tolerance of wanted's."""
    return all(abs(a - b) <= tolerance for a, b in zip(actual, wanted, strict=True))


def jpeg_markers(data: bytes) -> list[int]:
    """The marker codes of a JPEG's segments up to its first scan."""
    assert data[:2] == b"\xff\xd8"
    markers, offset = [], 2
    while True:
        assert data[offset] == 0xFF
        marker = data[offset + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        offset += 2 + length


def jpeg_markers_after_first_scan(data: bytes) -> list[int]:
    """Marker codes between the first scan and the end (progressive JPEGs have many scans)."""
    start = data.index(b"\xff\xda")
    found = []
    for index in range(start + 2, len(data) - 1):
        if data[index] == 0xFF and data[index + 1] not in (0x00, *range(0xD0, 0xD8), 0xFF):
            found.append(data[index + 1])
    return found


def webp_chunks(data: bytes) -> list[bytes]:
    """The four-character codes of a WebP file's chunks."""
    assert (data[:4], data[8:12]) == (b"RIFF", b"WEBP")
    chunks, offset = [], 12
    while offset < len(data):
        kind = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        chunks.append(kind)
        offset += 8 + size + (size & 1)
    return chunks


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ProcessedImage]:
    """A 12 MP phone JPEG held sideways (orientation 6) with GPS and camera metadata, and what
    process() makes of it."""
    data = sample_images.phone_jpeg(4032, 3024, orientation=6)
    return data, processed(tmp_path_factory.mktemp("phone"), data)


SECRETS = {
    "EXIF header": b"Exif\x00\x00",
    "XMP namespace": b"http://ns.adobe.com/xap",
    "GPS latitude": sample_images.gps_latitude_bytes(),
    "camera make": sample_images.CAMERA_MAKE.encode(),
    "camera model": sample_images.CAMERA_MODEL.encode(),
    "body serial": sample_images.BODY_SERIAL.encode(),
    "comment": sample_images.COMMENT,
    "XMP place": sample_images.XMP_SECRET.encode(),
    "IPTC city": sample_images.IPTC_CITY,
    "Photoshop IRB": b"Photoshop 3.0",
}


def test_the_phone_photo_does_carry_the_metadata(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    # Without this the no-metadata checks below could pass on an innocent input.
    data, _ = phone_photo
    assert [name for name, secret in SECRETS.items() if secret not in data] == []


def test_no_rendition_carries_metadata_in_its_bytes(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    _, result = phone_photo
    for item in result.renditions:
        leaked = [name for name, secret in SECRETS.items() if secret in item.data]
        assert leaked == [], f"{item.variant}/{item.format} leaks {leaked}"


def test_renditions_hold_only_picture_data_and_the_colour_profile(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    _, result = phone_photo
    for item in result.renditions:
        if item.format == "jpeg":
            markers = jpeg_markers(item.data) + jpeg_markers_after_first_scan(item.data)
            # No APP1 (EXIF, XMP), APP13 (IPTC) or COM segment, nor any other extra.
            assert set(markers) - ALLOWED_JPEG_MARKERS - {0xD9} == set(), item.variant
        else:
            assert set(webp_chunks(item.data)) <= ALLOWED_WEBP_CHUNKS, item.variant


def test_pillow_finds_no_metadata_in_any_rendition(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    _, result = phone_photo
    for item in result.renditions:
        image = opened(item)
        assert len(image.getexif()) == 0
        assert {"exif", "xmp", "comment", "photoshop"} & set(image.info) == set()


def test_every_rendition_keeps_the_colour_profile(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    _, result = phone_photo
    for item in result.renditions:
        assert opened(item).info.get("icc_profile") == sample_images.srgb_icc()


def test_the_photo_is_shown_upright_at_every_size(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    # Orientation 6: the camera was turned clockwise, so the stored top-left corner is the
    # top-right one of the picture as seen.
    _, result = phone_photo
    assert (result.width, result.height) == (3024, 4032)
    for item in result.renditions:
        assert red_corners(opened(item)) == ["top-right"], f"{item.variant}/{item.format}"


def test_every_variant_comes_in_every_format_at_its_size(
    phone_photo: tuple[bytes, ProcessedImage],
) -> None:
    _, result = phone_photo
    expected_sizes = {
        "square150": (150, 150),
        "w320": (320, 427),
        "w640": (640, 853),
        "w1080": (1080, 1440),
    }
    assert [(r.variant, r.format) for r in result.renditions] == [
        (spec.name, fmt) for spec in VARIANTS for fmt in FORMATS
    ]
    for item in result.renditions:
        image = opened(item)
        assert (item.width, item.height) == image.size == expected_sizes[item.variant]
        assert image.format == PILLOW_FORMATS[item.format]
        assert item.content_type == FORMATS[item.format]
        assert item.sha256 == hashlib.sha256(item.data).hexdigest()


def test_a_big_jpeg_is_decoded_at_reduced_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded_sizes: list[tuple[int, int]] = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def recording_load(self: JpegImagePlugin.JpegImageFile) -> object:
        result = real_load(self)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording_load)
    result = processed(tmp_path, sample_images.phone_jpeg(4032, 3024, orientation=6))
    # Half scale is the smallest that still gives the 1080-wide variant (3024 / 4 < 1080).
    assert set(decoded_sizes) == {(2016, 1512)}
    assert rendition(result, "w1080", "jpeg").width == 1080


@pytest.mark.parametrize(
    ("orientation", "corner", "sideways"),
    [
        (1, "top-left", False),
        (2, "top-right", False),
        (3, "bottom-right", False),
        (4, "bottom-left", False),
        (5, "top-left", True),
        (6, "top-right", True),
        (7, "bottom-right", True),
        (8, "bottom-left", True),
    ],
)
def test_every_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, corner: str, sideways: bool
) -> None:
    result = processed(tmp_path, sample_images.phone_jpeg(160, 120, orientation=orientation))
    assert (result.width, result.height) == ((120, 160) if sideways else (160, 120))
    for fmt in FORMATS:
        assert red_corners(opened(rendition(result, "w1080", fmt))) == [corner]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # Small pictures are never enlarged: every variant is at most the original.
        ((100, 80), {"square150": (80, 80), "w320": (100, 80), "w1080": (100, 80)}),
        # A panorama: the widths apply, the height follows (at least 1 pixel).
        ((8000, 200), {"square150": (150, 150), "w320": (320, 8), "w1080": (1080, 27)}),
        ((20000, 3), {"square150": (3, 3), "w320": (320, 1), "w1080": (1080, 1)}),
        ((1, 1), {"square150": (1, 1), "w320": (1, 1), "w1080": (1, 1)}),
    ],
)
def test_variant_sizes_follow_the_picture(
    tmp_path: Path, size: tuple[int, int], expected: dict[str, tuple[int, int]]
) -> None:
    result = processed(tmp_path, sample_images.jpeg(*size))
    assert (result.width, result.height) == size
    for variant, variant_size in expected.items():
        for fmt in FORMATS:
            item = rendition(result, variant, fmt)
            assert (item.width, item.height) == opened(item).size == variant_size


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (sample_images.jpeg(), "image/jpeg"),
        (sample_images.png(), "image/png"),
        (sample_images.gif(), "image/gif"),
        (sample_images.webp(), "image/webp"),
    ],
)
def test_each_accepted_type_is_decided_from_the_bytes(
    tmp_path: Path, data: bytes, content_type: str
) -> None:
    result = processed(tmp_path, data)
    assert (result.content_type, result.width, result.height) == (content_type, 64, 48)
    assert len(result.renditions) == len(VARIANTS) * len(FORMATS)


def test_transparency_is_kept_in_webp_and_white_in_jpeg(tmp_path: Path) -> None:
    data = sample_images.png_with_alpha(64, 48)
    result = processed(tmp_path, data)
    webp = opened(rendition(result, "w1080", "webp"))
    assert webp.mode == "RGBA"
    left, right = pixel(webp, 8, 24), pixel(webp, 56, 24)
    assert is_red(left)
    assert left[3] == 255
    assert right[3] == 0
    jpeg = opened(rendition(result, "w1080", "jpeg"))
    assert jpeg.mode == "RGB"
    assert is_red(pixel(jpeg, 8, 24))
    assert min(pixel(jpeg, 56, 24)) >= 245
    # The PNG's text chunk stays behind.
    assert sample_images.PNG_TEXT.encode() in data
    assert all(sample_images.PNG_TEXT.encode() not in r.data for r in result.renditions)


def test_a_cmyk_jpeg_becomes_rgb_without_a_foreign_profile(tmp_path: Path) -> None:
    result = processed(tmp_path, sample_images.cmyk_jpeg())
    assert result.content_type == "image/jpeg"
    for item in result.renditions:
        image = opened(item)
        assert image.mode == "RGB"
        assert "icc_profile" not in image.info
        # Pure cyan ink shows as cyan.
        assert all_close(pixel(image, image.width // 2, image.height // 2), (0, 255, 255), 40)


def test_an_animated_gif_is_shown_as_its_first_frame(tmp_path: Path) -> None:
    data = sample_images.animated_gif()
    result = processed(tmp_path, data)
    assert (result.content_type, result.width, result.height) == ("image/gif", 40, 30)
    assert sample_images.GIF_COMMENT in data
    for item in result.renditions:
        image = opened(item)
        assert getattr(image, "n_frames", 1) == 1
        assert is_red(pixel(image.convert("RGB"), image.width // 2, image.height // 2))
        assert sample_images.GIF_COMMENT not in item.data
        assert "comment" not in image.info


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I;16", "RGB"])
def test_every_png_mode_is_served_as_rgb_or_rgba(tmp_path: Path, mode: str) -> None:
    value: dict[str, int | tuple[int, ...]] = {
        "1": 1,
        "L": 128,
        "LA": (128, 255),
        "P": 7,
        "I;16": 32896,
        "RGB": (128, 128, 128),
    }
    buffer = io.BytesIO()
    PillowImage.new(mode, (20, 10), value[mode]).save(buffer, "PNG")
    result = processed(tmp_path, buffer.getvalue())
    for item in result.renditions:
        image = opened(item)
        assert image.mode in ("RGB", "RGBA") if item.format == "webp" else image.mode == "RGB"
    if mode == "I;16":
        # 16-bit grey is scaled into 8 bits, not clipped to white.
        grey = pixel(opened(rendition(result, "w1080", "jpeg")), 10, 5)
        assert all_close(grey, (128, 128, 128), 8)


def test_the_placeholder_is_a_4x3_blurhash_of_the_picture(tmp_path: Path) -> None:
    result = processed(tmp_path, sample_images.png(64, 48, colour=sample_images.BLUE))
    assert blurhash.components(result.placeholder) == (4, 3)
    # A blurhash is coarse (its components are quantised): near the colour is what counts.
    decoded = blurhash.decode(result.placeholder, 8, 6)
    for row in decoded:
        for value in row:
            assert all_close(tuple(value), sample_images.BLUE, 24)


def test_processing_is_deterministic(tmp_path: Path) -> None:
    data = sample_images.phone_jpeg(800, 600, orientation=3)
    first, second = processed(tmp_path, data), processed(tmp_path, data)
    assert first == second
    assert len({r.sha256 for r in first.renditions}) == len(first.renditions)


def test_a_ten_megabyte_photo_is_processed(tmp_path: Path) -> None:
    data = sample_images.noise_jpeg(10)
    assert 9_000_000 < len(data) < 11_000_000
    result = processed(tmp_path, data)
    assert result.content_type == "image/jpeg"
    assert rendition(result, "w1080", "webp").width == 1080
    assert rendition(result, "w1080", "jpeg").width == 1080


def test_a_png_declaring_a_vast_canvas_is_too_large(tmp_path: Path) -> None:
    error = rejected(tmp_path, sample_images.png_bomb(100_000, 100_000))
    assert error.reason is Reason.IMAGE_TOO_LARGE
    assert error.violations[0].description == f"must have at most {MAX_PIXELS} pixels"


def test_a_canvas_over_the_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> object:
        loads.append(self.format or "")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    # 81 MP: below Pillow's own guard, above the service's limit.
    error = rejected(tmp_path, sample_images.png_bomb(9_000, 9_000))
    assert error.reason is Reason.IMAGE_TOO_LARGE
    assert loads == []


def test_a_canvas_pillow_only_warns_about_is_too_large(tmp_path: Path) -> None:
    # 100 MP sits between Pillow's warning and its error; storage_svc makes the warning an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PillowImage.DecompressionBombWarning)
        error = rejected(tmp_path, sample_images.png_bomb(10_000, 10_000), max_pixels=10**9)
    assert error.reason is Reason.IMAGE_TOO_LARGE


@pytest.mark.parametrize(("width", "height"), [(60_000, 50_000), (8_000, 6_000)])
def test_a_jpeg_declaring_too_many_pixels_is_too_large(
    tmp_path: Path, width: int, height: int
) -> None:
    error = rejected(tmp_path, sample_images.huge_declared_jpeg(width, height))
    assert error.reason is Reason.IMAGE_TOO_LARGE


def test_a_truncated_jpeg_is_refused_as_incomplete(tmp_path: Path) -> None:
    error = rejected(tmp_path, sample_images.truncated_jpeg())
    assert error.reason is Reason.IMAGE_TYPE_UNSUPPORTED
    assert error.violations[0].description.startswith("is incomplete")
    assert UNSUPPORTED_HINT in error.message


def test_a_png_with_corrupted_data_is_refused_as_damaged(tmp_path: Path) -> None:
    data = bytearray(sample_images.noise_image_bytes("PNG", 32, 32))
    data[data.index(b"IDAT") + 20] ^= 0xFF
    error = rejected(tmp_path, bytes(data))
    assert error.reason is Reason.IMAGE_TYPE_UNSUPPORTED
    assert error.violations[0].description.startswith("is damaged")


def test_a_jpeg_cut_inside_its_header_is_refused_as_damaged_or_incomplete(
    tmp_path: Path,
) -> None:
    error = rejected(tmp_path, sample_images.jpeg()[:40])
    assert error.reason is Reason.IMAGE_TYPE_UNSUPPORTED
    assert error.violations[0].description.startswith("is damaged or incomplete (its JPEG")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(1).randbytes(4096), id="random bytes"),
        pytest.param(b"Dear diary, today I uploaded a text file.\n" * 20, id="text"),
        pytest.param(sample_images.noise_image_bytes("BMP", 16, 16), id="BMP"),
        pytest.param(sample_images.noise_image_bytes("TIFF", 16, 16), id="TIFF"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="SVG"),
    ],
)
def test_anything_but_the_four_types_is_unsupported(tmp_path: Path, data: bytes) -> None:
    error = rejected(tmp_path, data)
    assert error.reason is Reason.IMAGE_TYPE_UNSUPPORTED
    assert error.violations[0].description == UNSUPPORTED_HINT
    assert error.message == f"invalid image: body {UNSUPPORTED_HINT}"


def test_an_empty_file_is_unsupported(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"")
    assert error.reason is Reason.IMAGE_TYPE_UNSUPPORTED
    assert error.violations[0].description == f"is empty; {UNSUPPORTED_HINT}"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: sample_images.phone_jpeg(48, 32), id="jpeg"),
        pytest.param(sample_images.png_with_alpha, id="png"),
        pytest.param(sample_images.animated_gif, id="gif"),
        pytest.param(sample_images.webp, id="webp"),
    ],
)
def test_damaged_files_raise_nothing_but_invalid_argument(
    tmp_path: Path, make: Callable[[], bytes]
) -> None:
    original = make()
    chance = random.Random(len(original))
    reasons: list[Reason] = []
    for attempt in range(40):
        damaged = bytearray(original)
        if attempt % 2:
            del damaged[chance.randrange(1, len(damaged)) :]
        else:
            for _ in range(4):
                damaged[chance.randrange(len(damaged))] = chance.randrange(256)
        try:
            processed(tmp_path, bytes(damaged))
        except InvalidArgument as error:
            reasons.append(error.reason)
    # Some damage is harmless (a GIF cut after its first frame still shows that frame), but
    # most must have been refused, or the loop above checked nothing.
    assert set(reasons) == {Reason.IMAGE_TYPE_UNSUPPORTED}
    assert len(reasons) >= 10


@pytest.mark.parametrize(("width", "height"), [(1170, 20000), (300, 16384), (1, 40000)])
def test_a_very_tall_picture_is_narrowed_to_fit_webp(
    tmp_path: Path, width: int, height: int
) -> None:
    path = tmp_path / "tall.png"
    PillowImage.new("RGB", (width, height), (10, 120, 200)).save(path)

    processed = process(path, max_pixels=40_000_000)

    assert (processed.width, processed.height) == (width, height)
    for rendition in processed.renditions:
        assert max(rendition.width, rendition.height) <= MAX_VARIANT_SIDE
        with PillowImage.open(io.BytesIO(rendition.data)) as shown:
            assert shown.size == (rendition.width, rendition.height)
