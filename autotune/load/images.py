"""Chat content for vision-language workloads: synthetic JPEGs or dataset images as data URLs.

Every synthetic image is different (a gradient whose colours come from the image's index and the
seed, a few seeded rectangles and the index drawn as a bar code), so vLLM's multimodal cache
cannot answer a repeat and every image costs the encoder the same work as a real one.
"""

from __future__ import annotations

import base64
import io
import random
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, ImageDraw

from autotune.errors import UserError

__all__ = [
    "WORDS",
    "chat_with_images",
    "data_url",
    "image_file_data_url",
    "image_part",
    "image_paths",
    "synthetic_chats",
    "synthetic_jpeg",
]

_JPEG_QUALITY = 85
_RECTANGLES = 4
MAX_IMAGE_BYTES = 64 << 20  # one dataset image file: 64 MiB at most
_CODE_BITS = 32  # bits of the bar code; images are told apart by their index modulo 2**32
# Short common words, about one token each in most tokenizers: the text of image requests.
_VOCABULARY = (
    "the of and to in is was for on are with as at be this have from or one had by word but not "
    "what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two "
    "more write go see number no way could people my than first water been call who oil its now "
    "find long down day did get come made may part over new sound take only little work know "
    "place year live me back give most very after thing our just name good man think say great "
    "where help through much before line right too mean old any same tell boy follow came want "
    "show also around form three small set put end does another well large must big even such"
)
WORDS = tuple(_VOCABULARY.split())


def synthetic_chats(
    rng: random.Random,
    prefixes: list[list[int]],
    *,
    n_words: int,
    images_per_request: tuple[int, int],
    image_size: tuple[int, int],
    seed: int,
) -> list[list[dict[str, object]]]:
    """One user message per prefix: synthetic images, then ``n_words`` words of text.

    The text starts with the :data:`WORDS` the prefix numbers and goes on with words drawn from
    ``rng``, as does the number of images when ``images_per_request`` is a range.
    """
    low, high = images_per_request
    width, height = image_size
    chats: list[list[dict[str, object]]] = []
    index = 0  # of the image in the whole benchmark: no two are alike
    for prefix in prefixes:
        words = [WORDS[i] for i in prefix]
        words += [rng.choice(WORDS) for _ in range(n_words - len(prefix))]
        content: list[dict[str, object]] = []
        for _ in range(rng.randint(low, high)):
            jpeg = synthetic_jpeg(seed=seed, index=index, width=width, height=height)
            content.append(image_part(data_url(jpeg, "image/jpeg")))
            index += 1
        content.append({"type": "text", "text": " ".join(words)})
        chats.append([{"role": "user", "content": content}])
    return chats


def synthetic_jpeg(*, seed: int, index: int, width: int, height: int) -> bytes:
    """A JPEG of exactly ``width`` x ``height`` pixels, the same for the same seed and index."""
    rng = random.Random(f"autotune-image-{seed}-{index}")
    image = _gradient(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(_RECTANGLES):
        x0, x1 = sorted(rng.randrange(width + 1) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height + 1) for _ in range(2))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    _bar_code(draw, index, width, height)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


def data_url(data: bytes, mime: str) -> str:
    """A ``data:`` URL for the OpenAI ``image_url`` content part."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_file_data_url(path: Path, *, where: str) -> str:
    """A data URL of an image file, with the MIME type of the format Pillow finds in it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # /dev/zero, a FIFO: reading would never end
            raise UserError(f"{where}: cannot read image {path} (not a regular file)")
        if info.st_size > MAX_IMAGE_BYTES:
            raise UserError(f"{where}: image {path} is over {MAX_IMAGE_BYTES >> 20} MiB")
        data = path.read_bytes()
        with warnings.catch_warnings():  # a decompression bomb is refused, not decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
                fmt = image.format
    except FileNotFoundError:
        raise UserError(f"{where}: image {path} does not exist") from None
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{where}: image {path} is too large to decode ({exc})") from None
    except Exception as exc:  # Pillow raises many kinds for a broken or hostile file
        raise UserError(f"{where}: cannot read image {path} ({_reason(exc)})") from None
    # An MPO (what many cameras write) is a JPEG with extra frames after the first.
    mime = "image/jpeg" if fmt == "MPO" else Image.MIME.get(fmt or "", "")
    if not mime.startswith("image/"):
        raise UserError(f"{where}: {path} is not an image a server takes (format {fmt})")
    return data_url(data, mime)


def image_part(url: str) -> dict[str, object]:
    """An OpenAI chat content part for an image."""
    return {"type": "image_url", "image_url": {"url": url}}


def image_paths(row: Mapping[str, object], where: str) -> list[str]:
    """The ``images`` of a dataset row (none if it has no such key)."""
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise UserError(f"{where}: 'images' must be a list of image paths")
    return images


def chat_with_images(
    prompt: object,
    messages: list[dict[str, object]] | None,
    paths: list[str],
    *,
    folder: Path,
    where: str,
) -> list[dict[str, object]]:
    """Chat messages with the images at ``paths`` (relative to ``folder``) before the text.

    A text ``prompt`` becomes one user message; otherwise the images go before the content of
    the first user message of ``messages``.
    """
    parts = [image_part(image_file_data_url(folder / p, where=where)) for p in paths]
    if isinstance(prompt, str):
        return [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]
    if messages is None:
        raise UserError(f"{where}: 'images' need a text 'prompt' or 'messages', not token ids")
    for i, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise UserError(f"{where}: the first user message needs a 'content' for its images")
        return [*messages[:i], {**message, "content": [*parts, *content]}, *messages[i + 1 :]]
    raise UserError(f"{where}: 'images' need a user message to go in")


def _gradient(rng: random.Random, width: int, height: int) -> Image.Image:
    """A diagonal gradient between two random colours."""
    # Pillow's 256x256 ramps, stretched: far faster than setting pixels one by one.
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    ramp = Image.blend(horizontal, vertical, 0.5)
    channels = []
    for _ in range(3):
        start, end = rng.randrange(256), rng.randrange(256)
        lut = [start + (end - start) * v // 255 for v in range(256)]
        channels.append(ramp.point(lut))
    return Image.merge("RGB", channels)


def _bar_code(draw: ImageDraw.ImageDraw, index: int, width: int, height: int) -> None:
    """Draw ``index`` as black and white blocks along the top edge, where there is room."""
    block = min(width // _CODE_BITS, height // 4, 16)
    if block < 1:
        return  # too small for a bar code; the seeded colours still tell images apart
    code = index % (1 << _CODE_BITS)
    for bit in range(_CODE_BITS):
        fill = (255, 255, 255) if code >> bit & 1 else (0, 0, 0)
        x = bit * block
        draw.rectangle((x, 0, x + block - 1, block - 1), fill=fill)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:200] or type(exc).__name__
