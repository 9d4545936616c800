import pytest
from pydantic import ValidationError

from openanomaly.domain.durations import format_duration, parse_duration
from openanomaly.domain.spec import Pipeline


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("14d", 14 * 86400),
        ("1w", 604800),
        (60, 60),
        ("90", 90),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "m5", "5mm", "1.5h", "-5m", "0s", "5x"])
def test_bad_durations_name_the_input(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_pipeline_defaults_and_roundtrip() -> None:
    p = Pipeline(id="cpu", query="up", step="1m", infer={"context": "2h"})
    assert p.step == 60
    assert p.infer.context == 7200
    dumped = p.model_dump(mode="json")
    assert dumped["step"] == "1m"
    assert Pipeline.model_validate(dumped) == p


def test_pipeline_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        Pipeline(id="Bad Id", query="", scoring={"interval": 1.5}, model={"nmae": "x"})
    locs = {".".join(map(str, e["loc"])) for e in exc.value.errors()}
    assert {"id", "query", "scoring.interval", "model.nmae"} <= locs


def test_infer_every_must_be_multiple_of_step() -> None:
    with pytest.raises(ValidationError, match="multiple of step"):
        Pipeline(id="x", query="up", step="1m", infer={"every": "90s"})
