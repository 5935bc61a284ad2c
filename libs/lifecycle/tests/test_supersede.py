from lifecycle import supersede
from pixelmesh.common.v1 import generation_pb2 as gen

RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    gen.GENERATION_STATE_RUNNING,
    gen.GENERATION_STATE_SUCCEEDED,
    gen.GENERATION_STATE_FAILED,
    gen.GENERATION_STATE_CANCELLED,
)


def g(version: int, state: int = RUNNING) -> gen.Generation:
    return gen.Generation(id="gen_x", version=version, state=state)


def test_first_state_is_kept() -> None:
    assert supersede(None, g(1)).version == 1


def test_newer_non_terminal_versions_win() -> None:
    assert supersede(g(2), g(3)).version == 3
    assert supersede(g(3), g(3)) is None
    assert supersede(g(3), g(2)) is None


def test_a_late_cancel_with_an_old_version_still_ends_the_generation() -> None:
    kept = supersede(g(7), g(3, CANCELLED))
    assert kept.state == CANCELLED and kept.version == 8


def test_the_first_terminal_state_wins() -> None:
    assert supersede(g(5, CANCELLED), g(9, SUCCEEDED)) is None
    assert supersede(g(5, FAILED), g(9, RUNNING)) is None


def test_annotations_of_the_same_terminal_state_apply() -> None:
    assert supersede(g(5, SUCCEEDED), g(6, SUCCEEDED)).version == 6
    assert supersede(g(5, SUCCEEDED), g(5, SUCCEEDED)) is None
