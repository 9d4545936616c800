"""What the services do per shard: read a shard's series, and keep the pipeline's own
checkpoint as the roll-up of its shards' (from which the shards of a new layout start).

When ``shards`` changes, the series move between shards, and the new shards' state keys are
new (``pipeline#k/8`` instead of ``pipeline#j/4``). A new shard starts from the pipeline's own
key, which holds, after every sharded run, the lowest checkpoint of the shards as its
checkpoint and, when the shards stand apart (or one left a window journalled), the span up to
the highest as a journalled window. The new shard scores from the lowest checkpoint and
completes that span with only what the TSDB lacks (the recovery of an interrupted window):
no window is lost (nothing before the lowest checkpoint was unwritten) and none is written
twice (what the faster shards wrote is read back and not sent again).
"""

from __future__ import annotations

from openanomaly.domain.records import WindowState
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.shards import Shard, shards
from openanomaly.domain.spec import Pipeline
from openanomaly.ports import CheckpointStore, MetricsReader, ShardReader


def read(
    reader: MetricsReader,
    pipeline: Pipeline,
    start: int,
    end: int,
    shard: Shard,
    *,
    recent: bool = False,
) -> SeriesBatch:
    """The pipeline's series of ``shard`` on ``[start, end]``: cut while decoding when the
    reader can, else read whole and cut (``recent``: see ``MetricsReader.query_range``)."""
    q, step = pipeline.query, pipeline.step
    if shard.whole:
        return reader.query_range(q, start, end, step, recent=recent)
    if isinstance(reader, ShardReader):
        return reader.query_shard(q, start, end, step, shard, recent=recent)
    return shard.take(reader.query_range(q, start, end, step, recent=recent))


def start_state(checkpoints: CheckpointStore, pipeline_id: str, shard: Shard) -> WindowState:
    """The shard's own state, or the pipeline's (its shards' roll-up) for a shard that has
    never run (a new pipeline, or a new shard count)."""
    state = checkpoints.state(shard.key(pipeline_id))
    if shard.whole or state.last_end is not None or state.pending is not None:
        return state
    base = checkpoints.state(pipeline_id)
    return WindowState(state.pipeline_id, base.last_end, base.pending, state.owner, state.expires)


def roll_up(checkpoints: CheckpointStore, pipeline: Pipeline) -> None:
    """Record on the pipeline's own key the lowest checkpoint of its shards, and the span up
    to the highest end any of them reached or journalled (nothing while a shard never ran)."""
    if pipeline.shards == 1:
        return
    states = [checkpoints.state(s.key(pipeline.id)) for s in shards(pipeline.shards)]
    ends = [s.last_end for s in states]
    if any(e is None for e in ends):
        return
    low = min(e for e in ends if e is not None)
    high = max([e for e in ends if e is not None] + [s.pending[1] for s in states if s.pending])
    checkpoints.advance(pipeline.id, low)
    if high > low:
        checkpoints.begin(pipeline.id, low, high)
