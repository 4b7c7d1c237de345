"""Workload description, synthetic prompts and JSONL datasets."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

from autotune.errors import UserError
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests


def _write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_synthetic_prompts_are_exact_distinct_and_deterministic() -> None:
    w = Workload(input_len=16, output_len=7, seed=3)
    requests = build_requests(w, num_prompts=50, vocab_size=4096)
    assert len(requests) == 50
    for r in requests:
        assert isinstance(r.prompt, list) and len(r.prompt) == 16
        assert all(10 <= t < 4096 for t in r.prompt)
        assert (r.messages, r.max_tokens, r.ignore_eos, r.is_chat) == (None, 7, True, False)
    firsts = [r.prompt[0] for r in requests if isinstance(r.prompt, list)]
    assert len(set(firsts)) == 50  # no shared prefix for the prefix cache
    assert build_requests(w, num_prompts=50, vocab_size=4096) == requests
    other_seed = build_requests(Workload(input_len=16, seed=4), num_prompts=50, vocab_size=4096)
    assert [r.prompt for r in other_seed] != [r.prompt for r in requests]


def test_vocab_bounds_and_many_prompts() -> None:
    big = build_requests(Workload(input_len=4), num_prompts=20, vocab_size=None)
    assert all(10 <= t < 32000 for r in big if isinstance(r.prompt, list) for t in r.prompt)
    capped = build_requests(Workload(input_len=4), num_prompts=20, vocab_size=200_000)
    assert all(t < 32000 for r in capped if isinstance(r.prompt, list) for t in r.prompt)
    # 100 prompts from 20 usable ids: they differ within the first two tokens instead.
    many = build_requests(Workload(input_len=3), num_prompts=100, vocab_size=30)
    prefixes = {tuple(r.prompt[:2]) for r in many if isinstance(r.prompt, list)}
    assert len(prefixes) == 100
    with pytest.raises(UserError, match="input_len >= 2"):
        build_requests(Workload(input_len=1), num_prompts=100, vocab_size=30)
    with pytest.raises(UserError, match="vocab_size"):
        build_requests(Workload(), num_prompts=1, vocab_size=11)


def test_signature_and_round_trip(tmp_path: Path) -> None:
    assert Workload().signature() == "in512-out128"
    assert Workload(input_len=1024, output_len=64, seed=9).signature() == "in1024-out64"
    ds = _write(tmp_path / "d.jsonl", {"prompt": "hi"})
    digest = hashlib.sha256(ds.read_bytes()).hexdigest()[:8]
    assert Workload(dataset=ds).signature() == f"ds-{digest}-out128"
    for w in (Workload(), Workload(input_len=8, output_len=2, num_prompts=5, dataset=ds, seed=1)):
        assert Workload.from_dict(w.to_dict()) == w
    assert Workload.from_dict({}) == Workload()
    assert Workload.from_dict({"dataset": str(ds)}).dataset == ds
    with pytest.raises(UserError, match="unknown key"):
        Workload.from_dict({"input_length": 5})
    with pytest.raises(UserError, match="input_len must be an integer"):
        Workload.from_dict({"input_len": "512"})


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (Workload(input_len=0), "input_len must be at least 1"),
        (Workload(output_len=0), "output_len must be at least 1"),
        (Workload(num_prompts=0), "num_prompts must be at least 1"),
        (Workload(dataset=Path("/nonexistent/d.jsonl")), "does not exist"),
    ],
)
def test_validate(workload: Workload, message: str) -> None:
    with pytest.raises(UserError, match=message):
        workload.validate()


def test_dataset_rows_cycle_with_output_len_fallback(tmp_path: Path) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "hello"}]
    ds = _write(
        tmp_path / "d.jsonl",
        {"prompt": "one", "output_len": 5},
        "",
        {"messages": messages},
        {"prompt": [11, 12, 13]},
    )
    w = Workload(output_len=9, dataset=ds)
    w.validate()
    requests = build_requests(w, num_prompts=5, vocab_size=None)
    assert requests[0] == Request(prompt="one", messages=None, max_tokens=5, ignore_eos=True)
    assert requests[1] == Request(prompt=None, messages=messages, max_tokens=9, ignore_eos=True)
    assert requests[1].is_chat
    assert requests[2].prompt == [11, 12, 13]
    assert requests[3:] == requests[:2]
    assert len(build_requests(w, num_prompts=2, vocab_size=None)) == 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"prompt": "a"}', '{"prompt": '], "line 2: not valid JSON"),
        (["[1, 2]"], "line 1: expected a JSON object"),
        ([{"prompt": "a", "messages": []}], "line 1: expected exactly one of"),
        ([{"output_len": 3}], "line 1: expected exactly one of"),
        ([{"prompt": ""}], "line 1: 'prompt' must be"),
        ([{"messages": [{"content": "x"}]}], "line 1: 'messages' must be"),
        ([{"prompt": "a"}, {"prompt": "b", "output_len": 0}], "line 2: output_len must be"),
        ([{"prompt": "a", "output_len": True}], "line 1: output_len must be"),
        ([""], "has no rows"),
    ],
)
def test_bad_dataset_names_file_and_line(tmp_path: Path, rows: list[object], message: str) -> None:
    ds = _write(tmp_path / "bad.jsonl", *rows)
    with pytest.raises(UserError, match=message) as info:
        Workload(dataset=ds).validate()
    assert str(ds) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError):
        build_requests(Workload(dataset=ds), num_prompts=1, vocab_size=None)


def test_unreadable_dataset(tmp_path: Path) -> None:
    ds = tmp_path / "latin1.jsonl"
    ds.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(UserError, match="cannot read it"):
        Workload(dataset=ds).validate()
    with pytest.raises(UserError, match="cannot read it"):
        Workload(dataset=tmp_path).signature()


# --- image workloads ----------------------------------------------------------------------------


def _contents(requests: list[Request]) -> list[list[dict[str, object]]]:
    """The content parts of each request's single user message."""
    out = []
    for r in requests:
        assert r.prompt is None and r.messages is not None and len(r.messages) == 1
        assert r.messages[0]["role"] == "user"
        content = r.messages[0]["content"]
        assert isinstance(content, list)
        out.append(content)
    return out


def _urls(content: list[dict[str, object]]) -> list[str]:
    urls = []
    for part in content:
        if part["type"] == "image_url":
            image_url = part["image_url"]
            assert isinstance(image_url, dict) and isinstance(image_url["url"], str)
            urls.append(image_url["url"])
    return urls


def _decode(url: str) -> tuple[str, bytes]:
    head, _, data = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(data)


def test_image_signatures_and_max_images(tmp_path: Path) -> None:
    assert Workload(images_per_request=(2, 2)).signature() == "in512-out128-img2-512x512"
    w = Workload(input_len=64, output_len=32, images_per_request=(1, 4), image_size=(640, 480))
    assert w.signature() == "in64-out32-img1to4-640x480"
    assert Workload(images_per_request=(0, 0)).signature() == "in512-out128-img0-512x512"
    assert Workload(image_size=(64, 64)).signature() == "in512-out128"  # text: unchanged
    assert (Workload().max_images, w.max_images) == (0, 4)
    assert Workload(images_per_request=(3, 3)).max_images == 3
    ds = _write(
        tmp_path / "d.jsonl",
        {"prompt": "a"},
        {"prompt": "b", "images": ["x.jpg", "y.jpg"]},
        {"prompt": "c", "images": ["x.jpg"]},
    )
    assert Workload(dataset=ds).max_images == 2  # counted without opening the images
    assert Workload(dataset=_write(tmp_path / "t.jsonl", {"prompt": "a"})).max_images == 0


def test_image_fields_round_trip(tmp_path: Path) -> None:
    w = Workload(input_len=8, images_per_request=(1, 3), image_size=(320, 200), seed=2)
    d = w.to_dict()
    assert d["images_per_request"] == [1, 3] and d["image_size"] == [320, 200]
    assert Workload.from_dict(yaml.safe_load(yaml.safe_dump(d))) == w  # plain YAML values
    assert Workload.from_dict(Workload().to_dict()) == Workload()
    assert Workload.from_dict({"images_per_request": [2, 2]}).images_per_request == (2, 2)
    with pytest.raises(UserError, match="unknown key"):
        Workload.from_dict({"images": [2, 2]})
    with pytest.raises(UserError, match="images_per_request must be a list of two integers"):
        Workload.from_dict({"images_per_request": 2})
    with pytest.raises(UserError, match="image_size must be an integer"):
        Workload.from_dict({"image_size": [512, "512"]})


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (Workload(images_per_request=(-1, 2)), r"images_per_request must be 0 <= low <= high"),
        (Workload(images_per_request=(3, 2)), r"not 3\.\.2"),
        (Workload(image_size=(0, 512)), r"image_size must be 1\.\.8192 pixels a side, got 0x512"),
        (Workload(image_size=(512, 8193)), "got 512x8193"),
        (
            Workload(images_per_request=(1, 1), dataset=Path("d.jsonl")),
            "images_per_request is for synthetic prompts",
        ),
    ],
)
def test_validate_image_fields(workload: Workload, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        workload.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=message):
        build_requests(workload, num_prompts=1, vocab_size=None)


def test_fixed_image_count_requests() -> None:
    w = Workload(input_len=20, output_len=9, images_per_request=(2, 2), image_size=(96, 64))
    requests = build_requests(w, num_prompts=30, vocab_size=None)
    assert all(r.is_chat and r.max_tokens == 9 and r.ignore_eos for r in requests)
    firsts = set()
    for content in _contents(requests):
        assert [p["type"] for p in content] == ["image_url", "image_url", "text"]
        text = content[-1]["text"]
        assert isinstance(text, str) and len(text.split()) == 20
        firsts.add(text.split()[0])
        for url in _urls(content):
            mime, data = _decode(url)
            assert mime == "image/jpeg"
            with Image.open(io.BytesIO(data)) as image:
                assert (image.format, image.size, image.mode) == ("JPEG", (96, 64), "RGB")
    assert len(firsts) == 30  # distinct from the first word on
    assert build_requests(w, num_prompts=30, vocab_size=None) == requests


def test_image_count_range_is_uniform_and_seeded() -> None:
    w = Workload(input_len=4, images_per_request=(1, 3), image_size=(16, 16), seed=5)
    requests = build_requests(w, num_prompts=120, vocab_size=None)
    counts = [len(_urls(c)) for c in _contents(requests)]
    assert set(counts) == {1, 2, 3}
    assert all(counts.count(k) >= 20 for k in (1, 2, 3))  # about 40 each
    assert build_requests(w, num_prompts=120, vocab_size=None) == requests
    other = build_requests(replace(w, seed=6), num_prompts=120, vocab_size=None)
    assert [len(_urls(c)) for c in _contents(other)] != counts
    assert _urls(_contents(other)[0]) != _urls(_contents(requests)[0])


def test_images_are_unique_across_requests() -> None:
    w = Workload(input_len=8, images_per_request=(3, 3), image_size=(64, 64))
    urls = [
        u for c in _contents(build_requests(w, num_prompts=60, vocab_size=None)) for u in _urls(c)
    ]
    assert len(urls) == 180 and len(set(urls)) == 180
    pixels = set()
    for url in urls:
        with Image.open(io.BytesIO(_decode(url)[1])) as image:
            pixels.add(image.tobytes())
    assert len(pixels) == 180  # what the server caches on: the decoded pixels


def test_no_images_and_many_prompts() -> None:
    w = Workload(input_len=1, images_per_request=(0, 0))
    contents = _contents(build_requests(w, num_prompts=500, vocab_size=None))
    assert all(len(c) == 1 and c[0]["type"] == "text" for c in contents)
    texts = [c[0]["text"] for c in contents]
    # More prompts than words: the first two words tell them apart (text grows past input_len).
    assert len(set(texts)) == 500 and all(isinstance(t, str) and len(t.split()) == 2 for t in texts)


def test_generated_images_are_small() -> None:
    w = Workload(input_len=16, images_per_request=(2, 2))
    requests = build_requests(w, num_prompts=100, vocab_size=None)
    sizes = [len(_decode(u)[1]) for c in _contents(requests) for u in _urls(c)]
    assert len(sizes) == 200 and max(sizes) < 64_000


def _image_file(path: Path, fmt: str, size: tuple[int, int] = (20, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 60)).save(path, format=fmt)
    return path


def test_dataset_rows_with_images(tmp_path: Path) -> None:
    jpg = _image_file(tmp_path / "img" / "a.jpg", "JPEG")
    png = _image_file(tmp_path / "elsewhere" / "b.png", "PNG", (7, 5))
    misnamed = _image_file(tmp_path / "img" / "c.jpg", "PNG")  # the format, not the name, counts
    mpo = tmp_path / "camera.jpg"  # what many cameras write: a JPEG with more frames after it
    Image.new("RGB", (8, 8)).save(
        mpo, format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))]
    )
    system = {"role": "system", "content": "be brief"}
    ds = _write(
        tmp_path / "d.jsonl",
        {"prompt": "what is this?", "images": ["img/a.jpg", str(png)], "output_len": 3},
        {"messages": [system, {"role": "user", "content": "and this?"}], "images": ["img/c.jpg"]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "images": []},
        {"prompt": [11, 12]},
        {"prompt": "photo", "images": ["camera.jpg"]},
    )
    w = Workload(output_len=9, dataset=ds)
    w.validate()
    assert w.max_images == 2
    r0, r1, r2, r3, r4 = build_requests(w, num_prompts=5, vocab_size=None)
    assert r0.prompt is None and r0.max_tokens == 3 and r0.ignore_eos
    (content,) = _contents([r0])
    assert content[-1] == {"type": "text", "text": "what is this?"}
    assert [_decode(u) for u in _urls(content)] == [
        ("image/jpeg", jpg.read_bytes()),
        ("image/png", png.read_bytes()),
    ]
    assert r1.prompt is None and r1.messages is not None and r1.messages[0] == system
    assert r1.messages[1]["role"] == "user"
    user_content = r1.messages[1]["content"]
    assert isinstance(user_content, list)
    assert [_decode(u) for u in _urls(user_content)] == [("image/png", misnamed.read_bytes())]
    assert user_content[1:] == [{"type": "text", "text": "and this?"}]
    assert r2.messages == [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    assert r3.prompt == [11, 12] and r3.messages is None
    assert [_decode(u)[0] for u in _urls(_contents([r4])[0])] == ["image/jpeg"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt": "a", "images": ["missing.jpg"]},
            r"line 2: image .*missing\.jpg does not exist",
        ),
        ({"prompt": "a", "images": ["notes.jpg"]}, r"line 2: cannot read image .*notes\.jpg"),
        ({"prompt": "a", "images": ["sub"]}, r"line 2: cannot read image .*sub"),
        ({"prompt": "a", "images": "ok.png"}, "line 2: 'images' must be a list of image paths"),
        ({"prompt": "a", "images": [3]}, "line 2: 'images' must be a list of image paths"),
        ({"prompt": [11], "images": ["ok.png"]}, "line 2: 'images' need a text 'prompt'"),
        (
            {"messages": [{"role": "system", "content": "s"}], "images": ["ok.png"]},
            "line 2: 'images' need a user message",
        ),
        (
            {"messages": [{"role": "user"}], "images": ["ok.png"]},
            "line 2: the first user message needs a 'content'",
        ),
    ],
)
def test_bad_dataset_images(tmp_path: Path, row: dict[str, object], message: str) -> None:
    _image_file(tmp_path / "ok.png", "PNG")
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "sub").mkdir()
    ds = _write(tmp_path / "bad.jsonl", {"prompt": "fine", "images": ["ok.png"]}, row)
    with pytest.raises(UserError, match=message) as info:
        Workload(dataset=ds).validate()
    assert str(ds) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=message):
        build_requests(Workload(dataset=ds), num_prompts=1, vocab_size=None)
