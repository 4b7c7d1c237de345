"""One vLLM release: the Dockerfile's base image, the default image of ``profiles export`` and the
version README.md and docker/README.md name all agree with ``autotune.pins.VLLM_RELEASE``."""

from __future__ import annotations

import re
from dataclasses import replace

import yaml

from autotune.pins import GPU_IMAGE, VLLM_RELEASE, vllm_image
from autotune.profiles.export import export
from tests.conftest import ROOT
from tests.docker.test_docker_files import args_of, split_image
from tests.profiles.test_store import make

TAGGED = re.compile(r"vllm/vllm-openai(?:-cpu)?:v([0-9][0-9A-Za-z.+-]*[0-9A-Za-z])")


def test_release_is_a_plain_version() -> None:
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", VLLM_RELEASE)
    assert vllm_image() == f"{GPU_IMAGE}:v{VLLM_RELEASE}"


def test_dockerfile_base_is_the_pinned_release() -> None:
    ref = args_of("FROM")[-1].split()[-1]
    repo, tag, _ = split_image(ref)
    assert f"{repo}:{tag}" == vllm_image()
    # the comments (how to look up and pin the digest) name the same tag
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert set(TAGGED.findall(text)) == {VLLM_RELEASE}


def test_export_default_image_is_the_pinned_release_for_a_profile_measured_on_it() -> None:
    profile = replace(make("2026-01-01"), vllm_version=VLLM_RELEASE)
    docs = list(yaml.safe_load_all(export(profile, fmt="k8s", model="m", command=[])))
    (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == vllm_image()


def docker_section(text: str) -> str:
    start = text.index("\n## Docker")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_readmes_name_the_pinned_release() -> None:
    readme = docker_section((ROOT / "README.md").read_text())
    docker = (ROOT / "docker" / "README.md").read_text()
    for name, text in (("README.md, Docker section", readme), ("docker/README.md", docker)):
        assert set(TAGGED.findall(text)) == {VLLM_RELEASE}, name
        versions = set(re.findall(r"vLLM ([0-9]+\.[0-9]+\.[0-9]+)", text))
        assert versions <= {VLLM_RELEASE}, f"{name} names vLLM {versions}"
