"""The image limit of a vision study: the guide launches its moves and the sampler's proposals
at the most images a benchmark request carries (within the searched range), since a higher
limit only sizes vLLM's encoder profiling run for images no request sends; ``--images max``
(where the limit is the finding) leaves it to the sampler."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM, LIMIT_ARG
from autotune.load.request import Request
from autotune.search import study as st
from autotune.search.moves.guide import Guide
from autotune.search.moves.load_shape import Load
from autotune.search.space import Dim, SearchSpace
from tests.search.test_long_prompts import Idle
from tests.search.test_predicted_crash import Still, kv_tokens
from tests.search.test_remeasure import SPACE, Quiet

VISION = dataclasses.replace(
    SPACE, dims=(*SPACE.dims, Dim(IMAGE_DIM, 1, 16, arg=LIMIT_ARG)), image_size=(224, 224)
)
DEFAULT: dict[str, Value] = {
    "gpu_memory_utilization": 0.9, "max_num_seqs": 16, "max_num_batched_tokens": 2048,
    IMAGE_DIM: 16,
}  # fmt: skip


def _chat(images: int) -> Request:
    parts: list[object] = [{"type": "image_url", "image_url": {"url": "data:"}}] * images
    parts.append({"type": "text", "text": "x" * 400})
    return Request(prompt=None, messages=[{"role": "user", "content": parts}], max_tokens=24,
                   ignore_eos=True)  # fmt: skip


def test_the_load_knows_the_most_images_a_request_carries() -> None:
    requests = [_chat(1), _chat(3), _chat(2)]
    assert Load.of(requests, concurrency=None, image_tokens=100).images == 3
    searched = Load.of(requests, concurrency=None, image_tokens=100, searched_images=True)
    assert searched.images == 0
    text = [Request(prompt=[1] * 50, messages=None, max_tokens=8, ignore_eos=True)]
    assert Load.of(text, concurrency=None, image_tokens=100).images == 0


def _move_after_default(tmp_path: Path, *, space: SearchSpace, images: int) -> dict[str, Value]:
    """The guide's next move once vLLM's default image limit (16) served."""
    study = st.open_study(name="vision", storage=optuna.storages.InMemoryStorage(), seed=3)
    plan = st.StudyPlan(
        study=study, space=space, runner=Idle(), budget=1, log_dir=tmp_path / "logs",
        default_params=DEFAULT, guide=Still(space=space, seed=0),
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    load = Load(request_tokens=700, in_flight=64, prompt_tokens=600, images=images)
    guide = Guide(space=space, seed=0, load=load, kv_tokens=kv_tokens)
    guide.before_ask(study)
    (waiting,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return dict(waiting.system_attrs["fixed_params"])


@pytest.mark.parametrize(("low", "images", "limit"), [(1, 2, 2), (4, 2, 4), (1, 0, 16)])
def test_moves_run_at_the_images_the_requests_carry(
    tmp_path: Path, low: int, images: int, limit: int
) -> None:
    """Two images a request: the next move runs at limit 2; never below the range (as
    ``--min-images 4`` sets it); no images known (``--images max``): the limit is kept."""
    dims = (*SPACE.dims, Dim(IMAGE_DIM, low, 16, arg=LIMIT_ARG))
    space = dataclasses.replace(VISION, dims=dims)
    move = _move_after_default(tmp_path, space=space, images=images)
    assert move[IMAGE_DIM] == limit


@pytest.mark.parametrize(("images", "limit"), [(3, 3), (40, 16), (0, 9)])
def test_the_samplers_proposals_run_at_the_images_the_requests_carry(
    images: int, limit: int
) -> None:
    study = st.open_study(name="vision", storage=optuna.storages.InMemoryStorage(), seed=3)
    load = Load(request_tokens=700, in_flight=64, prompt_tokens=600, images=images)
    guide = Guide(space=VISION, seed=0, load=load, kv_tokens=kv_tokens)
    proposal = DEFAULT | {IMAGE_DIM: 9}
    lifted = guide.lift(study, proposal)
    assert lifted[IMAGE_DIM] == limit
    assert {k: v for k, v in lifted.items() if k != IMAGE_DIM} == {
        k: v for k, v in proposal.items() if k != IMAGE_DIM
    }
