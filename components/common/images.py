"""Reading one tweet image: its bytes (what the cache key hashes) and, only when a generator needs the pixels, a
guarded decode.

The decompression-bomb guard runs before any pixel is decoded: PIL reads only the header in `Image.open`, so
`width * height` is known up front and compared with `max_pixels` (PIL's own MAX_IMAGE_PIXELS by default, but
configurable per run). PIL's `DecompressionBombError` (raised at open, beyond twice its global limit) is caught too.
The limit is checked here instead of by setting the global `Image.MAX_IMAGE_PIXELS` because generators run on
threads, and a process-wide setting (or a `warnings` filter for `DecompressionBombWarning`) is not thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# PIL's own default limit (Image.MAX_IMAGE_PIXELS): about 89.5 megapixels, a 1024 MiB RGB buffer.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# Formats chat-completions servers accept as data URLs; anything else is re-encoded as PNG before sending.
_DATA_URL_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


class ImageProblem(Exception):
    """An image that cannot be used: missing, unreadable, oversized. `reason` is what the run report records."""

    def __init__(self, image_id: str, reason: str):
        self.image_id = image_id
        self.reason = reason
        super().__init__(f"image {image_id}: {reason}")


def image_path(image_dir: Path, image_id: str) -> Path:
    return Path(image_dir) / f"{image_id}.jpg"


@dataclass(frozen=True)
class ImageInput:
    """The raw bytes of one image and their sha256; pixels are decoded on demand by `decode`."""

    image_id: str
    path: Path
    data: bytes
    sha256: str

    @property
    def key_material(self) -> dict:
        # The bytes decide the context, not the file name: the same picture under two ids is generated once.
        return {"image_sha256": self.sha256}

    def decode(self, max_pixels: int) -> Image.Image:
        """The image as RGB, after the size guard; raises ImageProblem when it is oversized or unreadable."""
        return decode_image(self.image_id, self.data, max_pixels, where=self.path)

    def data_url(self, max_pixels: int) -> str:
        """A `data:` URL for a chat-completions request: the original bytes when the format is one servers take."""
        decoded = self.decode(max_pixels)  # validates before paying for a request
        with Image.open(io.BytesIO(self.data)) as im:
            mime = _DATA_URL_MIME.get(im.format or "")
        payload = self.data
        if mime is None:
            buffer = io.BytesIO()
            decoded.save(buffer, format="PNG")
            payload, mime = buffer.getvalue(), "image/png"
        return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def decode_image(image_id: str, data: bytes, max_pixels: int, where: Path | str = "the given bytes") -> Image.Image:
    """Image bytes as RGB, after the size guard; raises ImageProblem when oversized or unreadable. ``where`` (the
    file the bytes came from) only goes into the reason. Every place that decodes an image goes through here."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageProblem(
                    image_id,
                    f"oversized: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                    f"(decompression-bomb guard) in {where}",
                )
            im.load()  # decodes every pixel: a truncated or corrupt file fails here, not inside a model
            return im.convert("RGB")
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem(image_id, f"oversized: {exc} (decompression-bomb guard) in {where}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # SyntaxError is what some PIL plugins raise on a malformed header.
        raise ImageProblem(image_id, f"unreadable: {type(exc).__name__}: {exc} in {where}") from None


def read_image(image_dir: Path, image_id: str, max_bytes: int) -> ImageInput:
    """Read `<image_dir>/<image_id>.jpg` and hash it; raises ImageProblem when it is missing or too large a file."""
    path = image_path(image_dir, image_id)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageProblem(image_id, f"missing: no file {path}") from None
    except OSError as exc:
        raise ImageProblem(image_id, f"unreadable: {exc}") from None
    if size > max_bytes:
        raise ImageProblem(image_id, f"oversized: {path} is {size} bytes, over the limit of {max_bytes}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageProblem(image_id, f"unreadable: {exc}") from None
    return ImageInput(image_id=image_id, path=path, data=data, sha256=hashlib.sha256(data).hexdigest())


def read_image_under(image_dir: str | Path, name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``name`` inside the operator's ``image_dir``, for requests that name an image.

    Safe against a hostile ``name``: the path is resolved (symlinks and ``..`` followed) and must stay inside the
    resolved directory (``is_relative_to``), so ``../../etc/hostname``, ``/dev/zero`` and a symlink to either are
    refused before anything is opened; only a regular file is read (no devices, FIFOs, directories), and at most
    ``max_bytes + 1`` bytes are read (a file that grows meanwhile is still bounded). Errors (ImageProblem) name only
    ``name`` as given, never a resolved path, and do not say whether something outside the directory exists.
    """
    import os
    import stat

    base = Path(image_dir).resolve()
    candidate = (base / name).resolve()
    if not candidate.is_relative_to(base) or candidate == base:
        raise ImageProblem(name, "refused: the path leaves the image directory")
    try:
        fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageProblem(name, "missing: no such file in the image directory") from None
    except OSError as exc:
        raise ImageProblem(name, f"unreadable: {exc.strerror}") from None
    info = os.fstat(fd)  # of the file actually opened, not of a path that may have changed since
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ImageProblem(name, "refused: not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > max_bytes:
            raise ImageProblem(name, f"oversized: {info.st_size} bytes, over the limit of {max_bytes}")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageProblem(name, f"oversized: over the limit of {max_bytes} bytes")
    return data
