"""Image metrics: what ``find_image_refs`` recognizes and ``measure_image_refs`` reports."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image, PngImagePlugin

from llamonitor import monitor_llm
from llamonitor.instrument import _images
from llamonitor.instrument._images import (
    HEADER_BYTES,
    MAX_IMAGES,
    ImageRef,
    find_image_refs,
    measure_image_refs,
    parse_image_header,
    sniff_format,
)
from llamonitor.testing import capture_spans

# (format, Pillow save options): every format and each WebP chunk kind
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("PNG", {}),
    ("JPEG", {}),
    ("JPEG", {"progressive": True}),
    ("GIF", {}),
    ("WEBP", {}),  # lossy: VP8
    ("WEBP", {"lossless": True}),  # VP8L
    ("WEBP", {"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}),  # VP8X
    ("BMP", {}),
    ("TIFF", {}),
]
SIZES = [(1, 1), (37, 21), (640, 480), (3001, 7)]


def encode(fmt: str, size: tuple[int, int], mode: str = "RGB", **options: Any) -> bytes:
    pixels = np.random.default_rng(size[0] * size[1]).integers(0, 256, (size[1], size[0], 3))
    im = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def measure(result: Any) -> dict[str, Any]:
    return measure_image_refs(find_image_refs(result))


def expect(fmt: str | None, w: int | None, h: int | None, size: int | None) -> dict[str, Any]:
    return {
        "image_count": 1,
        "image_total_pixels": None if w is None or h is None else w * h,
        "image_file_size_bytes": size,
        "image_width": w,
        "image_height": h,
        "image_format": fmt,
    }


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


NO_IMAGE = {
    "image_count": 0,
    "image_total_pixels": None,
    "image_file_size_bytes": None,
    "image_width": None,
    "image_height": None,
    "image_format": None,
}


@pytest.fixture(params=[True, False], ids=["pillow", "builtin"])
def pillow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Run the test with Pillow, then with Pillow hidden from the worker side."""
    if not request.param:
        monkeypatch.setattr(_images, "_pillow", lambda: None)
    yield request.param


# ------------------------------------------------------------ formats


@pytest.mark.parametrize(("fmt", "options"), KINDS, ids=lambda k: str(k))
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_builtin_parser_agrees_with_pillow(
    fmt: str, options: dict[str, Any], size: tuple[int, int]
) -> None:
    """The built-in header parser gives Pillow's format, width and height."""
    data = encode(fmt, size, "P" if fmt == "GIF" else "RGB", **options)
    with Image.open(io.BytesIO(data)) as im:
        pillow = (im.format, im.width, im.height)
    assert pillow == (fmt, *size)
    assert parse_image_header(data) == pillow
    assert parse_image_header(data[:HEADER_BYTES]) == pillow


def test_webp_variants_cover_all_three_chunk_kinds() -> None:
    """The WebP cases really exercise the VP8, VP8L and VP8X parsers."""
    chunks = {encode(f, (5, 5), **o)[12:16] for f, o in KINDS if f == "WEBP"}
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}


def test_animated_gif_and_webp_report_the_canvas_size() -> None:
    """Animated images are one image of their canvas size, as Pillow says."""
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    for fmt in ("GIF", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50)
        assert parse_image_header(buf.getvalue()) == (fmt, 40, 30)
        assert measure(buf.getvalue()) == expect(fmt, 40, 30, len(buf.getvalue()))


def test_bmp_top_down_and_os2_headers_match_pillow() -> None:
    """Negative BMP heights (top-down rows) and 12-byte OS/2 headers parse as Pillow does."""
    data = bytearray(encode("BMP", (9, 4)))
    data[22:26] = struct.pack("<i", -4)
    w, h = 3, 2
    row = (w * 3 + 3) & ~3
    os2 = b"BM" + struct.pack("<IHHI", 26 + row * h, 0, 0, 26)
    os2 += struct.pack("<IHHHH", 12, w, h, 1, 24) + b"\x00" * row * h
    for bmp, size in ((bytes(data), (9, 4)), (os2, (3, 2))):
        with Image.open(io.BytesIO(bmp)) as im:
            assert (im.format, im.size) == ("BMP", size)
        assert parse_image_header(bmp) == ("BMP", *size)


def test_big_endian_tiff_header() -> None:
    """TIFF width/height are read in either byte order, SHORT or LONG."""
    ifd = struct.pack(">H", 2) + struct.pack(">HHIHH", 256, 3, 1, 300, 0)
    ifd += struct.pack(">HHII", 257, 4, 1, 70000) + b"\x00" * 4
    assert parse_image_header(b"MM\x00*" + struct.pack(">I", 8) + ifd) == ("TIFF", 300, 70000)


@pytest.mark.parametrize(("fmt", "options"), KINDS, ids=lambda k: str(k))
def test_bytes_are_measured_exactly(pillow: bool, fmt: str, options: dict[str, Any]) -> None:
    """Image bytes give exact width, height, format, pixels and encoded size."""
    data = encode(fmt, (123, 45), **options)
    assert measure(data) == expect(fmt, 123, 45, len(data))
    assert measure(bytearray(data)) == expect(fmt, 123, 45, len(data))
    assert measure(memoryview(data)) == expect(fmt, 123, 45, len(data))


def test_png_with_large_chunks_before_pixels(pillow: bool) -> None:
    """A PNG whose metadata outgrows the kept header still has its size."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 100_000)
    buf = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buf, "PNG", pnginfo=info)
    assert measure(buf.getvalue()) == expect("PNG", 64, 32, len(buf.getvalue()))


def test_jpeg_whose_frame_header_lies_beyond_the_kept_header(pillow: bool, tmp_path: Path) -> None:
    """Bytes: counted as a JPEG of unknown size; a file: Pillow reads further."""
    icc = os.urandom(200_000)  # APP2 segments push the SOF marker past 64 KiB
    data = encode("JPEG", (50, 60), icc_profile=icc)
    assert measure(data) == expect("JPEG", None, None, len(data))
    path = tmp_path / "big_icc.jpg"
    path.write_bytes(data)
    if pillow:
        assert measure(path) == expect("JPEG", 50, 60, len(data))
    else:
        assert measure(path) == expect("JPEG", None, None, len(data))


# ------------------------------------------------------------ sources


@pytest.mark.parametrize(("fmt", "options"), KINDS, ids=lambda k: str(k))
def test_files_by_path(pillow: bool, tmp_path: Path, fmt: str, options: dict[str, Any]) -> None:
    """str and PathLike paths give the file's size and header facts."""
    data = encode(fmt, (80, 60), **options)
    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(data)
    assert measure(path) == expect(fmt, 80, 60, len(data))
    assert measure(str(path)) == expect(fmt, 80, 60, len(data))


def test_data_urls_give_the_decoded_size_with_or_without_padding(pillow: bool) -> None:
    """The decoded size comes from the base64 length and padding."""
    for extra in range(3):  # three lengths mod 3: "==", "=" and no padding
        data = encode("PNG", (20, 10)) + b"\x00" * extra
        url = data_url(data)
        assert measure(url) == expect("PNG", 20, 10, len(data))
        assert measure(url.rstrip("=")) == expect("PNG", 20, 10, len(data))
    jpeg = encode("JPEG", (33, 44))
    upper = "DATA:IMAGE/JPEG;BASE64," + base64.b64encode(jpeg).decode()
    assert measure(upper) == expect("JPEG", 33, 44, len(jpeg))
    assert measure(data_url(jpeg, "image/jpeg;name=a.jpg")) == expect("JPEG", 33, 44, len(jpeg))


def test_pil_images_in_memory_and_from_files(tmp_path: Path) -> None:
    """PIL images give their size and format; opened files also their file size."""
    made = Image.new("RGB", (31, 17))
    assert measure(made) == expect(None, 31, 17, None)
    path = tmp_path / "a.gif"
    path.write_bytes(encode("GIF", (12, 13), "P"))
    with Image.open(path) as opened:
        assert measure(opened) == expect("GIF", 12, 13, path.stat().st_size)
        refs = find_image_refs(opened)
    path.unlink()  # file gone before the worker runs: still an image, size unknown
    assert measure_image_refs(refs) == expect("GIF", 12, 13, None)


def test_containers_sum_over_images_and_report_the_first(pillow: bool, tmp_path: Path) -> None:
    """Lists, tuples and dicts: count/pixels/size sum, width/height/format are the first's."""
    png, jpeg, gif = encode("PNG", (10, 20)), encode("JPEG", (30, 40)), encode("GIF", (5, 6), "P")
    path = tmp_path / "c.gif"
    path.write_bytes(gif)
    result = {
        "text": "three images",
        "images": [png, (data_url(jpeg, "image/jpeg"),)],
        "meta": {"file": str(path), "count": 3},
    }
    assert measure(result) == {
        "image_count": 3,
        "image_total_pixels": 10 * 20 + 30 * 40 + 5 * 6,
        "image_file_size_bytes": len(png) + len(jpeg) + len(gif),
        "image_width": 10,
        "image_height": 20,
        "image_format": "PNG",
    }


def test_chat_content_blocks() -> None:
    """OpenAI image_url parts, Anthropic base64 sources and Gemini inline data are found."""
    png, webp = encode("PNG", (8, 9)), encode("WEBP", (11, 12))
    openai_part = {"type": "image_url", "image_url": {"url": data_url(png)}}
    anthropic = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/webp",
            "data": base64.b64encode(webp).decode(),
        },
    }
    gemini = {
        "candidates": [
            {"content": {"parts": [{"inline_data": {"mime_type": "image/png", "data": png}}]}}
        ]
    }
    m = measure([{"type": "text", "text": "hi"}, openai_part, anthropic, gemini])
    assert (m["image_count"], m["image_format"], m["image_width"]) == (3, "PNG", 8)
    assert m["image_total_pixels"] == 8 * 9 + 11 * 12 + 8 * 9
    assert m["image_file_size_bytes"] == 2 * len(png) + len(webp)


class _OpenAIImage:
    def __init__(self, b64_json: str | None = None, url: str | None = None) -> None:
        self.b64_json = b64_json
        self.url = url
        self.revised_prompt = "a cat"


class _OpenAIImagesResponse:
    def __init__(self, data: list[_OpenAIImage]) -> None:
        self.created = 0
        self.data = data


class _PydImage(pydantic.BaseModel):
    b64_json: str | None = None
    url: str | None = None


class _PydResponse(pydantic.BaseModel):
    created: int
    data: list[_PydImage]


def test_openai_style_image_responses(pillow: bool) -> None:
    """``.data[*].b64_json`` and ``.data[*].url`` data URLs, on plain and pydantic objects."""
    png, jpeg = encode("PNG", (64, 48)), encode("JPEG", (16, 16))
    b64 = base64.b64encode(png).decode()
    plain = _OpenAIImagesResponse(
        [
            _OpenAIImage(b64_json=b64),
            _OpenAIImage(url=data_url(jpeg, "image/jpeg")),
            _OpenAIImage(url="https://example.com/cat.png"),  # remote: not measured
        ]
    )
    pyd = _PydResponse(
        created=0, data=[_PydImage(b64_json=b64), _PydImage(url=data_url(jpeg, "image/jpeg"))]
    )
    want = {
        "image_count": 2,
        "image_total_pixels": 64 * 48 + 16 * 16,
        "image_file_size_bytes": len(png) + len(jpeg),
        "image_width": 64,
        "image_height": 48,
        "image_format": "PNG",
    }
    assert measure(plain) == want
    assert measure(pyd) == want
    assert measure(pyd.model_dump()) == want


def test_bare_base64_only_under_image_keys() -> None:
    """Bare base64 counts under keys like b64_json, not as any string."""
    b64 = base64.b64encode(encode("PNG", (3, 4))).decode()
    assert measure({"b64_json": b64})["image_count"] == 1
    assert measure({"images": [b64, b64]})["image_count"] == 2
    assert measure({"text": b64}) == NO_IMAGE
    assert measure(b64) == NO_IMAGE


def test_image_count_and_nesting_are_bounded() -> None:
    """At most MAX_IMAGES images are kept; very deep nesting is not searched."""
    png = encode("PNG", (2, 2))
    assert len(find_image_refs([png] * (MAX_IMAGES + 50))) == MAX_IMAGES
    deep: Any = png
    for _ in range(20):
        deep = [deep]
    assert find_image_refs(deep) == []
    cyclic: list[Any] = [png]
    cyclic.append(cyclic)
    assert 1 <= len(find_image_refs(cyclic)) <= MAX_IMAGES
    assert find_image_refs([0.5] * 1_000_000 + [png]) == []  # the node budget ran out


# ------------------------------------------------------------ not images, never raising


def test_non_images_are_ignored(tmp_path: Path) -> None:
    """Text, non-image bytes, remote URLs and missing or non-image files count zero."""
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "text.png").write_text("not a png at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    values: list[Any] = [
        None, 0, 1.5, True, "", "hello world", "see cat.png for details",
        b"", b"plain bytes", bytearray(b"\x00" * 100), b"BM not really a bitmap",
        "data:text/plain;base64,aGVsbG8=", "data:image/svg+xml,<svg/>",
        "data:image/png;base64," + base64.b64encode(b"not a png").decode(),
        "data:image/png;base64,!!!!", "https://example.com/cat.png",
        str(tmp_path / "missing.png"), tmp_path / "missing.jpg", str(tmp_path / "dir.png"),
        str(tmp_path / "text.png"), str(tmp_path / "empty.jpg"), "bad\x00path.png",
        {"b64_json": "bm90IGFuIGltYWdlIGF0IGFsbCwganVzdCB0ZXh0"}, {"image": None},
    ]  # fmt: skip
    for value in values:
        assert measure(value) == NO_IMAGE, value
    assert measure(values) == NO_IMAGE


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, on truncated TIFF headers
def test_truncated_and_corrupt_images_never_raise(pillow: bool) -> None:
    """A recognizable but broken image is counted with whatever its header tells."""
    png = encode("PNG", (7, 8))
    assert measure(png[:20]) == expect("PNG", None, None, 20)
    assert measure(png[:30]) == expect("PNG", 7, 8, 30)  # IHDR is complete
    assert measure(b"\xff\xd8\xff" + b"\x00" * 50) == expect("JPEG", None, None, 53)
    for fmt in ("JPEG", "GIF", "WEBP", "BMP", "TIFF"):
        data = encode(fmt, (7, 8), "P" if fmt == "GIF" else "RGB")
        for cut in (4, 9, 16, 20, 27, 40, len(data) // 2):
            m = measure(data[:cut])
            if sniff_format(data[:cut]) is None:
                assert m == NO_IMAGE
            else:
                assert m["image_count"] == 1 and m["image_format"] == fmt, (fmt, cut)
                assert (m["image_width"], m["image_height"]) in ((None, None), (7, 8)), (fmt, cut)
        broken = data[:12] + b"\xab" * 200
        m = measure(broken)
        assert m["image_count"] == 0 or m["image_format"] == fmt


def test_header_claiming_a_huge_image(pillow: bool) -> None:
    """A decompression-bomb header is measured from the header, never decoded."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + b"\x00" * 4
    assert measure(png) == expect("PNG", 100_000, 100_000, len(png))


def test_huge_bytes_keep_only_a_bounded_header() -> None:
    """A 10 MB image is referenced by at most 64 KiB, copied from mutable buffers."""
    png = encode("PNG", (300, 200))
    jpeg = encode("JPEG", (300, 200))
    for head in (png, jpeg):
        big = head + b"\x00" * 10_000_000
        for value in (big, bytearray(big), memoryview(big)):
            (ref,) = find_image_refs(value)
            assert isinstance(ref.data, bytes) and len(ref.data) <= HEADER_BYTES
            assert ref.size == len(big)
        url = data_url(big)
        (ref,) = find_image_refs(url)
        assert isinstance(ref.data, str) and len(ref.data) <= HEADER_BYTES * 4 // 3
        assert measure(url)["image_file_size_bytes"] == len(big)
    mutable = bytearray(png)
    refs = find_image_refs(mutable)
    mutable[:] = b"\x00" * len(mutable)  # the application reuses its buffer
    assert measure_image_refs(refs) == expect("PNG", 300, 200, len(png))


def test_memoryviews_and_arrays() -> None:
    """Contiguous views (and arrays, by their .data) are read as bytes; strided ones are skipped."""
    png = encode("PNG", (6, 5))
    arr = np.frombuffer(png + b"\x00" * (-len(png) % 4), np.uint8).reshape(-1, 4)
    assert measure(arr.data)["image_width"] == 6
    assert measure(arr)["image_width"] == 6
    assert measure(arr[:, ::2].data) == NO_IMAGE
    assert measure(arr[:, ::2]) == NO_IMAGE
    assert measure(np.zeros((480, 640, 3), np.uint8)) == NO_IMAGE  # raw pixels: no header


class _Raises:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)

    def __getattribute__(self, name: str) -> Any:
        if name in ("__class__", "__dict__"):
            raise RuntimeError(name)
        return object.__getattribute__(self, name)

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __str__(self) -> str:
        raise RuntimeError("str")

    __repr__ = __str__


class _BadList(list[Any]):
    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("iter")

    def __getitem__(self, i: Any) -> Any:
        raise RuntimeError("getitem")


class _BadDict(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("items")


class _BadPath(os.PathLike[str]):
    def __fspath__(self) -> str:
        raise RuntimeError("fspath")


class _BadBytes(bytes):
    def __len__(self) -> int:
        raise RuntimeError("len")


class _BadImage(Image.Image):
    @property
    def size(self) -> tuple[int, int]:
        raise RuntimeError("size")


class _DataProperty:
    @property
    def data(self) -> Any:
        raise RuntimeError("data")


def test_weird_objects_never_raise() -> None:
    """Objects whose attributes, len, str, iteration or paths raise hold no image."""
    png = encode("PNG", (4, 4))
    weird: list[Any] = [
        _Raises(), _BadList([png]), _BadDict(image=png), _BadPath(), _BadBytes(png),
        _BadImage(), _DataProperty(), (x for x in [png]), type, len, object(),
        {"image": _Raises()}, [[[[[[[[[[]]]]]]]]]],
    ]  # fmt: skip
    for value in weird:
        assert find_image_refs(value) == [], value
    assert measure([*weird, {1: 2, (3,): png}]) == expect("PNG", 4, 4, len(png))
    bad_refs = [
        ImageRef("bytes", b"\x89PNG", None), ImageRef("base64", "@@@", 1),
        ImageRef("path", None), ImageRef("path", "/"), ImageRef("bytes", None),
    ]  # fmt: skip
    assert measure_image_refs(bad_refs) == NO_IMAGE


def test_generators_are_not_consumed() -> None:
    """Looking for images never iterates an iterator the application still needs."""
    gen = iter([encode("PNG", (2, 2))])
    assert find_image_refs(gen) == []
    assert len(list(gen)) == 1


def test_hot_path_does_not_import_pillow() -> None:
    """Finding images imports nothing; sizing a PNG needs no Pillow even on the worker."""
    png = encode("PNG", (5, 5))
    code = (
        "import sys\n"
        "from llamonitor.instrument._images import find_image_refs, measure_image_refs\n"
        f"refs = find_image_refs([{png!r}, 'a.png', {{'b64_json': 'iVBORw0KGgo='}}])\n"
        "assert len(refs) == 2, refs\n"
        "assert 'PIL' not in sys.modules, 'imported Pillow'\n"
        "assert measure_image_refs(refs[:1])['image_width'] == 5\n"
        "assert 'PIL' not in sys.modules, 'the built-in parser sizes a PNG'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------ through the decorator

_IMAGE_COLS = (
    "image_count",
    "image_total_pixels",
    "image_file_size_bytes",
    "image_width",
    "image_height",
    "image_format",
)


def _image_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in _IMAGE_COLS}


def test_decorator_measures_images_of_sync_and_async_functions(tmp_path: Path) -> None:
    """measure_images=True stores the image columns of each call's result."""
    png, webp = encode("PNG", (120, 80)), encode("WEBP", (10, 10))
    path = tmp_path / "out.webp"
    path.write_bytes(webp)

    @monitor_llm(operation_name="draw", measure_images=True)
    def draw() -> dict[str, Any]:
        return {"images": [png, str(path)]}

    @monitor_llm(operation_name="adraw", measure_images=True)
    async def adraw() -> Any:
        return _OpenAIImagesResponse([_OpenAIImage(b64_json=base64.b64encode(webp).decode())])

    @monitor_llm(operation_name="text", measure_images=True)
    def text() -> str:
        return "no pictures here"

    @monitor_llm(operation_name="odd", measure_images=True)
    def odd() -> Any:
        return _Raises()

    with capture_spans() as spans:
        assert draw() == {"images": [png, str(path)]}
        asyncio.run(adraw())
        text()
        odd()
    rows = {r["operation_name"]: _image_columns(r) for r in spans.rows()}
    assert rows["draw"] == {
        "image_count": 2,
        "image_total_pixels": 120 * 80 + 100,
        "image_file_size_bytes": len(png) + len(webp),
        "image_width": 120,
        "image_height": 80,
        "image_format": "PNG",
    }
    assert rows["adraw"] == expect("WEBP", 10, 10, len(webp))
    assert rows["text"] == NO_IMAGE
    assert rows["odd"] == NO_IMAGE


def test_image_collector_by_name() -> None:
    """collectors=["image"] is the same collector as measure_images=True."""
    jpeg = encode("JPEG", (64, 64))

    @monitor_llm(collectors=["image"])
    async def generate() -> str:
        return data_url(jpeg, "image/jpeg")

    with capture_spans() as spans:
        asyncio.run(generate())
    (row,) = spans.rows()
    assert _image_columns(row) == expect("JPEG", 64, 64, len(jpeg))
