"""Turn one uploaded picture into the renditions that are served: decided from its bytes, size
checked before decoding, oriented, stripped of every piece of metadata but the colour profile,
resized to fixed widths and re-encoded as WebP and JPEG, plus a blurhash placeholder."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import blurhash  # type: ignore[import-untyped]
from PIL import ExifTags, ImageCms, ImageFile
from PIL import Image as PillowImage

from meshkit.errors import DomainError, FieldViolation, InvalidArgument
from meshkit.reasons import Reason


@dataclass(frozen=True)
class VariantSpec:
    """A served size: at most `width` pixels wide (aspect kept), or a width x width centre crop
    when `square`."""

    name: str
    width: int
    square: bool = False


VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("square150", 150, square=True),
    VariantSpec("w320", 320),
    VariantSpec("w640", 640),
    VariantSpec("w1080", 1080),
)
# Rendition format -> MIME type; every variant is encoded in each.
FORMATS = {"webp": "image/webp", "jpeg": "image/jpeg"}

# Pillow format name -> MIME type. Cameras write multi-picture JPEGs that Pillow names "MPO";
# every viewer shows them as the JPEG they start with.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
# Only these decoders ever see uploaded bytes: a smaller attack surface than all of Pillow's.
DECODERS = ("JPEG", "PNG", "GIF", "WEBP")
UNSUPPORTED_HINT = "must be a complete JPEG, PNG, GIF or WebP image"

# The longest side WebP can encode; no variant is taller (or wider) than this.
MAX_VARIANT_SIDE = 16383
WEBP_QUALITY = 80
WEBP_METHOD = 4
JPEG_QUALITY = 82
# Side of the thumbnail the placeholder is computed from: blurhash is pure Python and only
# keeps the coarsest detail, so more pixels cost time and change nothing visible.
PLACEHOLDER_SIDE = 32
PLACEHOLDER_COMPONENTS = (4, 3)

_JPEG_FORMATS = ("JPEG", "MPO")
# Leading bytes of each accepted type: a file that starts like one but cannot be opened is a
# damaged image, not some other kind of file.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}
# EXIF Orientation -> the operation that shows the stored pixels upright (EXIF 2.32, 4.6.4).
_UPRIGHT = {
    2: PillowImage.Transpose.FLIP_LEFT_RIGHT,
    3: PillowImage.Transpose.ROTATE_180,
    4: PillowImage.Transpose.FLIP_TOP_BOTTOM,
    5: PillowImage.Transpose.TRANSPOSE,
    6: PillowImage.Transpose.ROTATE_270,
    7: PillowImage.Transpose.TRANSVERSE,
    8: PillowImage.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# Resize by whole-pixel averaging down to 3x the target, then LANCZOS: much faster on big
# pictures, indistinguishable from LANCZOS all the way.
_REDUCING_GAP = 3.0
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Rendition:
    """One served file: a variant in one format, its pixel size, bytes and their SHA-256 (hex)."""

    variant: str
    format: str
    content_type: str
    width: int
    height: int
    data: bytes
    sha256: str


@dataclass(frozen=True)
class ProcessedImage:
    """An accepted upload: its type (from its bytes), its size as shown (after orientation), a
    blurhash placeholder and every VARIANTS x FORMATS rendition."""

    content_type: str
    width: int
    height: int
    placeholder: str
    renditions: tuple[Rendition, ...]


class _Undecodable(Exception):
    """The file was recognised as an image but its pixels could not be read."""


def process(path: Path, *, max_pixels: int) -> ProcessedImage:
    """Check the image file at path and render it, or raise InvalidArgument on `body`
    (IMAGE_TYPE_UNSUPPORTED, IMAGE_TOO_LARGE); hostile bytes never raise anything else.

    Blocking and CPU-bound (call from a worker thread).
    """
    if path.stat().st_size == 0:
        raise rejected(Reason.IMAGE_TYPE_UNSUPPORTED, "is empty; " + UNSUPPORTED_HINT)
    try:
        return _process(path, max_pixels)
    except DomainError:
        raise
    except (PillowImage.DecompressionBombError, PillowImage.DecompressionBombWarning):
        # Pillow's own guard (warnings are errors in storage_svc) caught a huge canvas.
        raise too_many_pixels(max_pixels) from None
    except _Undecodable as error:
        raise _damaged(error.__cause__) from None
    except Exception:
        # Decoders fed hostile bytes fail in many ways (OSError, SyntaxError, ValueError,
        # struct.error, EOFError...): each means the upload is not an image we accept.
        raise _not_an_image(path) from None


def rejected(reason: Reason, description: str) -> InvalidArgument:
    """An INVALID_ARGUMENT about the uploaded bytes (field `body`)."""
    return InvalidArgument(
        message=f"invalid image: body {description}",
        reason=reason,
        violations=[FieldViolation("body", description)],
    )


def too_many_pixels(max_pixels: int) -> InvalidArgument:
    """The error for images whose canvas exceeds the pixel limit."""
    return rejected(Reason.IMAGE_TOO_LARGE, f"must have at most {max_pixels} pixels")


def _process(path: Path, max_pixels: int) -> ProcessedImage:
    """Identify, check, decode and render; failures past identification come out as
    _Undecodable."""
    with PillowImage.open(path, formats=DECODERS) as probe:
        try:
            probe.verify()
        except Exception as error:
            raise _Undecodable from error
    # verify() leaves the image unusable; a fresh one reads the size and pixel data.
    with PillowImage.open(path, formats=DECODERS) as image:
        content_type = CONTENT_TYPES.get(image.format or "")
        if content_type is None:
            raise rejected(Reason.IMAGE_TYPE_UNSUPPORTED, UNSUPPORTED_HINT)
        stored_width, stored_height = image.size
        if stored_width * stored_height > max_pixels:
            raise too_many_pixels(max_pixels)
        try:
            orientation, picture, icc_profile = _decoded(image)
        except Exception as error:
            raise _Undecodable from error
    width, height = (
        (stored_height, stored_width)
        if orientation in _SWAPS_SIDES
        else (stored_width, stored_height)
    )
    try:
        placeholder, renditions = _rendered(picture, width, height, icc_profile)
    except Exception as error:
        raise _Undecodable from error
    return ProcessedImage(
        content_type=content_type,
        width=width,
        height=height,
        placeholder=placeholder,
        renditions=renditions,
    )


def _decoded(image: ImageFile.ImageFile) -> tuple[int, PillowImage.Image, bytes | None]:
    """The EXIF orientation of an opened image, its pixels upright as RGB or RGBA without
    metadata, and the ICC profile that describes them (None when there is no usable one)."""
    if image.format in _JPEG_FORMATS:
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding (still reading every byte of scan
        # data, so truncation shows): a 12 MP photo never exists at full size.
        image.draft(None, _draft_size(image.size, _orientation(image)))
    image.load()
    orientation = _orientation(image)
    picture, icc_profile = _displayable(image)
    transpose = _UPRIGHT.get(orientation)
    if transpose is not None:
        picture = picture.transpose(transpose)
    return orientation, picture, icc_profile


def _rendered(
    picture: PillowImage.Image, width: int, height: int, icc_profile: bytes | None
) -> tuple[str, tuple[Rendition, ...]]:
    """The placeholder and every rendition of an upright picture shown at width x height."""
    renditions: list[Rendition] = []
    placeholder = ""
    for spec in VARIANTS:
        resized = _resized(picture, spec, width, height)
        if not placeholder and not spec.square:
            # The smallest whole-picture variant: the placeholder stands for all of it.
            placeholder = _placeholder(resized)
        renditions.extend(_encoded(resized, spec.name, icc_profile))
    return placeholder, tuple(renditions)


def _orientation(image: PillowImage.Image) -> int:
    """The EXIF Orientation of image (1 when absent, unknown or unreadable)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # Broken metadata does not make a broken picture: show the pixels as stored, as
        # browsers do.
        return 1
    return value if value in _UPRIGHT else 1


def _draft_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The smallest stored-orientation size that still serves every variant: as wide as the
    widest variant (once oriented) and as tall as the largest square."""
    swapped = orientation in _SWAPS_SIDES
    width, height = (stored[1], stored[0]) if swapped else stored
    widest = max(spec.width for spec in VARIANTS if not spec.square)
    largest_square = max(spec.width for spec in VARIANTS if spec.square)
    # A width of min(widest, width) also covers the square when the width is the short side;
    # the height only has to cover the square when it is.
    needed = (min(widest, width), min(largest_square, width, height))
    return (needed[1], needed[0]) if swapped else needed


def _displayable(image: PillowImage.Image) -> tuple[PillowImage.Image, bytes | None]:
    """A new RGB or RGBA image of image's pixels with no metadata, and the ICC profile that
    describes them (None when the pixels are sRGB or the profile is unusable)."""
    profile = image.info.get("icc_profile") or None
    mode = image.mode
    if mode == "CMYK":
        # Browsers show CMYK JPEGs poorly or not at all; served files are RGB, so the CMYK
        # profile would describe pixels that no longer exist.
        return _bare(_cmyk_to_srgb(image, profile)), None
    if mode.startswith("I"):
        # 16-bit greyscale: scale into 8 bits (a plain convert clips everything above 255).
        picture = image.convert("I").point(lambda value: value * (255 / 65535)).convert("RGB")
    elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        picture = image.convert("RGBA")
    else:
        picture = image.convert("RGB")
    if profile is not None and _colour_space(profile) != "RGB":
        # A greyscale (or mismatched) profile cannot describe RGB output.
        profile = None
    return _bare(picture), profile


def _cmyk_to_srgb(image: PillowImage.Image, profile: bytes | None) -> PillowImage.Image:
    """image converted to sRGB through its own CMYK profile when it has a usable one."""
    if profile is not None and _colour_space(profile) == "CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except Exception:  # noqa: S110 - a profile littlecms rejects: the plain formula below
            pass
        else:
            if converted is not None:
                return converted
    return image.convert("RGB")


def _colour_space(profile: bytes) -> str | None:
    """The colour space an ICC profile describes ("RGB", "GRAY", "CMYK"...), None if it is not
    a profile littlecms can read."""
    try:
        space: str = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile.xcolor_space
    except Exception:
        return None
    return space.strip()


def _resized(
    picture: PillowImage.Image, spec: VariantSpec, width: int, height: int
) -> PillowImage.Image:
    """picture at spec's size, computed from the full oriented size (width x height) so that a
    reduced decode gives the same dimensions; never larger than the original."""
    if spec.square:
        side = min(picture.width, picture.height)
        left = (picture.width - side) // 2
        top = (picture.height - side) // 2
        target = min(spec.width, width, height)
        return picture.resize(
            (target, target),
            PillowImage.Resampling.LANCZOS,
            box=(left, top, left + side, top + side),
            reducing_gap=_REDUCING_GAP,
        )
    target_width = min(spec.width, width)
    target_height = max(1, round(height * target_width / width))
    if target_height > MAX_VARIANT_SIDE:
        # A very tall picture (a scrolling screenshot) is narrowed until WebP can hold it.
        target_height = MAX_VARIANT_SIDE
        target_width = max(1, round(width * target_height / height))
    return picture.resize(
        (target_width, target_height), PillowImage.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP
    )


def _encoded(
    picture: PillowImage.Image, variant: str, icc_profile: bytes | None
) -> list[Rendition]:
    """picture encoded in every FORMATS, carrying the ICC profile and nothing else."""
    colour = {"icc_profile": icc_profile} if icc_profile else {}
    renditions = []
    for name, content_type in FORMATS.items():
        buffer = io.BytesIO()
        if name == "webp":
            # WebP keeps transparency; lossy with a lossless alpha plane by default.
            _bare(picture).save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, **colour)
        else:
            _bare(_on_white(picture)).save(
                buffer,
                "JPEG",
                quality=JPEG_QUALITY,
                optimize=True,
                progressive=True,
                subsampling="4:2:0",
                **colour,
            )
        data = buffer.getvalue()
        renditions.append(
            Rendition(
                variant=variant,
                format=name,
                content_type=content_type,
                width=picture.width,
                height=picture.height,
                data=data,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return renditions


def _on_white(picture: PillowImage.Image) -> PillowImage.Image:
    """picture without transparency: RGBA composited on white, anything else as it is."""
    if picture.mode != "RGBA":
        return picture
    flat = PillowImage.new("RGB", picture.size, _WHITE)
    flat.paste(picture, mask=picture.getchannel("A"))
    return flat


def _bare(picture: PillowImage.Image) -> PillowImage.Image:
    """picture with its metadata dropped, in place.

    Pillow carries `.info` (EXIF, XMP, comments, text chunks) through convert, resize and copy,
    and its encoders read some of it back (the JPEG comment, for one): an empty `.info` is what
    keeps every rendition clean.
    """
    picture.info = {}
    return picture


def _placeholder(picture: PillowImage.Image) -> str:
    """The blurhash of picture (as it looks on white), from a thumbnail of at most
    PLACEHOLDER_SIDE pixels a side."""
    scale = PLACEHOLDER_SIDE / max(picture.width, picture.height)
    size = (
        max(1, min(picture.width, round(picture.width * scale))),
        max(1, min(picture.height, round(picture.height * scale))),
    )
    thumbnail = _on_white(picture).resize(size, PillowImage.Resampling.BOX).convert("RGB")
    pixels = thumbnail.tobytes()
    row_bytes = thumbnail.width * 3
    rows = [
        [list(pixels[start + x * 3 : start + x * 3 + 3]) for x in range(thumbnail.width)]
        for start in range(0, len(pixels), row_bytes)
    ]
    components_x, components_y = PLACEHOLDER_COMPONENTS
    placeholder: str = blurhash.encode(rows, components_x=components_x, components_y=components_y)
    return placeholder


def _damaged(error: BaseException | None) -> InvalidArgument:
    """The error for a recognised image whose data cannot be decoded: incomplete when the data
    ended early, damaged otherwise."""
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return rejected(
            Reason.IMAGE_TYPE_UNSUPPORTED,
            "is incomplete (the file ends before the picture does); " + UNSUPPORTED_HINT,
        )
    return rejected(
        Reason.IMAGE_TYPE_UNSUPPORTED,
        "is damaged (its picture data cannot be decoded); " + UNSUPPORTED_HINT,
    )


def _not_an_image(path: Path) -> InvalidArgument:
    """The error for a file no accepted decoder could open: a damaged image when it starts like
    one (a header cut short or corrupted), otherwise some other kind of file."""
    with path.open("rb") as file:
        head = file.read(12)
    kind = next((name for magic, name in _SIGNATURES.items() if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is None:
        return rejected(Reason.IMAGE_TYPE_UNSUPPORTED, UNSUPPORTED_HINT)
    return rejected(
        Reason.IMAGE_TYPE_UNSUPPORTED,
        f"is damaged or incomplete (its {kind} header cannot be read); " + UNSUPPORTED_HINT,
    )
