"""Pipeline-file validation: every problem is reported with its file, line and field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from openanomaly.adapters.config.yaml_file import (
    PipelineFileError,
    load_pipeline_file,
    validate_file,
)
from openanomaly.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "pipelines.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


VALID = """
pipelines:
  - id: api-latency
    query: sum by (service) (rate(http_requests_total[5m]))
    step: 1m
    train: {window: 14d, every: 1d}
    infer: {every: 1m, context: 1d}
    model: {engine: statsforecast, name: AutoETS, params: {season_length: 1440}}
    scoring: {direction: above, interval: 0.99, min_deviation: 0.05}
    outputs: {labels: {team: payments}}
  - id: errors
    query: sum(rate(errors_total[5m]))
"""


def test_a_valid_file_has_no_problems(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)

    assert validate_file(path) == []
    loaded = load_pipeline_file(path)
    assert [p.id for p in loaded] == ["api-latency", "errors"]
    assert loaded[0].train.window == 14 * 86400
    assert loaded[0].outputs.labels == {"team": "payments"}


def test_a_bare_list_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "- id: a\n  query: up\n- id: b\n  query: up\n")

    assert validate_file(path) == []
    assert [p.id for p in load_pipeline_file(path)] == ["a", "b"]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "pipelines:\n", "pipelines: []\n"])
def test_an_empty_file_has_no_pipelines(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    assert validate_file(path) == []
    assert load_pipeline_file(path) == []


def test_malformed_yaml_reports_file_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          - id: a
            query: up
           step: 1m
        """,
    )

    messages = validate_file(path)

    assert len(messages) == 1
    assert messages[0].startswith(f"{path}:4:4: ")
    assert "expected <block end>" in messages[0]
    with pytest.raises(ConfigError) as caught:
        load_pipeline_file(path)
    assert str(caught.value) == messages[0]


def test_an_unclosed_flow_mapping_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines:\n  - id: a\n    query: up\n    train: {window: 14d\n")

    [message] = validate_file(path)

    assert message.startswith(f"{path}:5:")  # where the parser noticed: the end of the file
    assert "at line 4" in message  # and where the flow mapping started


def test_every_schema_error_is_reported_with_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          - id: first
            query: up
            scoring:
              direction: above
              interval: 1.5
          - id: second
            query: up
            step: 5x
            outputs:
              labels: {"__bad": x}
        """,
    )

    messages = validate_file(path)

    assert messages == [
        f"{path}:6: pipelines[0].scoring.interval: Input should be less than 1",
        f"{path}:9: pipelines[1].step: not a duration: '5x' (use e.g. 30s, 5m, 1h30m, 14d)",
        f"{path}:11: pipelines[1].outputs.labels: not valid label names: ['__bad']",
    ]
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path)
    assert caught.value.messages == messages
    assert caught.value.where == str(path)


def test_a_cross_field_error_points_at_its_pipeline(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          - id: ok
            query: up
          - id: slow
            query: up
            step: 1m
            infer: {every: 90s}
        """,
    )

    assert validate_file(path) == [
        f"{path}:4: pipelines[1]: infer.every (1m30s) must be a multiple of step (1m)"
    ]


def test_a_missing_field_points_at_its_pipeline(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines:\n  - id: a\n    query: up\n  - id: b\n    step: 1m\n")

    assert validate_file(path) == [f"{path}:4: pipelines[1].query: Field required"]


def test_an_unknown_field_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          - id: a
            query: up
            scoring:
              intervall: 0.9
            shedule: {}
        """,
    )

    first, second = validate_file(path)

    assert first.startswith(f"{path}:5: pipelines[0].scoring.intervall: unknown field 'intervall'")
    assert "did you mean 'interval'?" in first
    assert second.startswith(f"{path}:6: pipelines[0].shedule: unknown field 'shedule'")
    assert "allowed: id, query, step" in second


def test_a_duplicate_id_is_reported_at_the_second_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          - id: a
            query: up
          - id: b
            query: up
          - id: a
            query: down
        """,
    )

    assert validate_file(path) == [
        f"{path}:6: pipelines[2].id: duplicate pipeline id 'a' (first at line 2)"
    ]


def test_a_duplicate_id_is_reported_alongside_other_errors(tmp_path: Path) -> None:
    # pydantic skips PipelineFile's own duplicate check when a pipeline is invalid.
    path = write(tmp_path, "- id: a\n  query: up\n- id: a\n  query: ''\n")

    messages = validate_file(path)

    assert len(messages) == 2
    assert messages[0] == f"{path}:3: pipelines[1].id: duplicate pipeline id 'a' (first at line 1)"
    assert messages[1].startswith(f"{path}:4: pipelines[1].query: String should have at least")


def test_a_repeated_key_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines:\n  - id: a\n    query: up\n    step: 1m\n    step: 30s\n")

    assert validate_file(path) == [
        f"{path}:5: pipelines[0].step: duplicate key 'step' (first at line 4)"
    ]


@pytest.mark.parametrize("text", ["just a string\n", "42\n"])
def test_a_file_that_is_not_a_list_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    assert validate_file(path) == [f"{path}:1: expected a list of pipelines or a 'pipelines:' list"]


def test_a_top_level_typo_is_an_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path, "pipeline:\n  - id: a\n    query: up\n")

    [message] = validate_file(path)

    assert message.startswith(f"{path}:1: pipeline: unknown field 'pipeline'")
    assert "did you mean 'pipelines'?" in message


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    [message] = validate_file(path)

    assert message.startswith(f"{path}: cannot read:")
