"""What MLMD recorded about the pipeline's runs, read one run at a time.

LocalDagRunner records every component of a run as an execution in the run's
`pipeline_run` context, cached ones included (state CACHED, linked by OUTPUT
events to the artifacts they reuse). So what a run produced is found by
following that run's executions to their output artifacts, never by the
newest folder on disk: after runs of two configurations, the newest folder
may be the other configuration's.

A run stopped by SIGINT/SIGTERM (or a crash of the process) leaves its
current execution RUNNING and its output folders half written;
`abandon_interrupted` marks such executions CANCELED (MLMD's state for an
execution stopped before it completed; FAILED stays the state of a
component that raised) and removes their partial folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import pathlib
import time
from typing import Dict, Iterator, List, Optional

from etils import epath
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from musicrec import storage

METADATA_FILE = "metadata.sqlite"  # a run folder's MLMD store
LOCK_FILE = "run.lock"  # held by the run in progress (`one_run_at_a_time`)
Execution = metadata_store_pb2.Execution
Event = metadata_store_pb2.Event
RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"
PIPELINE_CONTEXT = "pipeline"
SUCCEEDED = (Execution.COMPLETE, Execution.CACHED)
ACTIVE = (Execution.NEW, Execution.RUNNING)
ABANDONED_PROPERTY = "abandoned"  # why an execution was marked CANCELED after an interrupted run
# TFX keeps an execution's scratch folders under <pipeline_root>/<component>/.system/.
SYSTEM_DIR = ".system"
STATEFUL_DIR = "stateful_working_dir"
STATEFUL_DIR_PROPERTY = "__stateful_working_dir_index__"


class RunRecordError(LookupError):
    """The metadata store has no record of what was asked (no run, component or output)."""


def open_store(run_dir) -> metadata_store.MetadataStore:
    """The MLMD store of a run folder (`<run_dir>/metadata.sqlite`); never creates one."""
    db = pathlib.Path(run_dir) / METADATA_FILE
    if not db.is_file():
        raise RunRecordError(f"no pipeline run in {run_dir} (no {METADATA_FILE}); run `musicrec run` first")
    # The SQLite connection TFX's metadata.sqlite_metadata_connection_config makes (without importing TFX).
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(db)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


@dataclasses.dataclass
class PipelineRun:
    """One run of the pipeline as MLMD recorded it: its executions and their artifacts."""

    store: metadata_store.MetadataStore
    context: metadata_store_pb2.Context

    @property
    def run_id(self) -> str:
        return self.context.name

    @functools.cached_property
    def pipeline_name(self) -> Optional[str]:
        """The pipeline the run belongs to (its executions' pipeline context)."""
        pipeline_type = self.store.get_context_type(PIPELINE_CONTEXT).id
        for execution in self.store.get_executions_by_context(self.context.id)[:1]:
            return next((c.name for c in self.store.get_contexts_by_execution(execution.id) if c.type_id == pipeline_type), None)
        return None

    @functools.cached_property
    def executions(self) -> Dict[str, metadata_store_pb2.Execution]:
        """Component id -> its execution in this run (ran, cached or failed)."""
        found = {}
        for execution in self.store.get_executions_by_context(self.context.id):
            component = component_of(self.store, execution)
            if component:
                found[component] = execution
        return found

    def states(self) -> Dict[str, str]:
        """Component id -> state of its execution (COMPLETE, CACHED, FAILED, ...)."""
        return {component: Execution.State.Name(e.last_known_state) for component, e in self.executions.items()}

    def execution(self, component_id: str) -> metadata_store_pb2.Execution:
        if component_id not in self.executions:
            raise RunRecordError(f"run {self.run_id} has no {component_id} execution "
                                 f"(it recorded: {', '.join(sorted(self.executions)) or 'nothing'})")
        return self.executions[component_id]

    def artifacts(self, component_id: str, key: str, event_type=Event.OUTPUT) -> List[metadata_store_pb2.Artifact]:
        """The artifacts this run's execution of a component read (INPUT) or wrote or reused (OUTPUT) under `key`."""
        execution = self.execution(component_id)
        events = [e for e in self.store.get_events_by_execution_ids([execution.id])
                  if e.type == event_type and e.path.steps and e.path.steps[0].key == key]
        return self.store.get_artifacts_by_id([e.artifact_id for e in events])

    def output(self, component_id: str, key: str) -> metadata_store_pb2.Artifact:
        """The artifact a component's execution in this run wrote (or reused from the cache) for an output."""
        found = self.artifacts(component_id, key)
        if len(found) != 1:
            state = Execution.State.Name(self.execution(component_id).last_known_state)
            raise RunRecordError(f"{component_id} ({state}) in run {self.run_id} recorded {len(found)} '{key}' outputs, not one")
        return found[0]

    def output_path(self, component_id: str, key: str) -> epath.Path:
        return storage.path(self.output(component_id, key).uri)

    def succeeded(self, component_id: str) -> bool:
        return component_id in self.executions and self.executions[component_id].last_known_state in SUCCEEDED


def component_of(store: metadata_store.MetadataStore, execution: metadata_store_pb2.Execution) -> Optional[str]:
    """The component (node) id of an execution: its node context is named '<pipeline>.<component>'."""
    node_type = store.get_context_type(NODE_CONTEXT).id
    nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
    return nodes[0].split(".", 1)[-1] if nodes else None


def runs_newest_first(run_dir, pipeline_name: Optional[str] = None) -> Iterator[PipelineRun]:
    """The runs recorded in a run folder, newest first; only those of `pipeline_name` when given
    (the training and release pipelines share a run folder's store)."""
    store = open_store(run_dir)
    for context in sorted(store.get_contexts_by_type(RUN_CONTEXT), key=lambda c: c.id, reverse=True):
        run = PipelineRun(store, context)
        if pipeline_name is None or run.pipeline_name == pipeline_name:
            yield run


def find_run(run_dir, run_id: Optional[str] = None, pipeline_name: Optional[str] = None) -> PipelineRun:
    """A run by its id (the `run_id` `run_local` returns), or the latest run in the folder (of
    `pipeline_name`, when given)."""
    if run_id is None:
        latest = next(runs_newest_first(run_dir, pipeline_name), None)
        if latest is None:
            of = f" of pipeline {pipeline_name}" if pipeline_name else ""
            raise RunRecordError(f"the metadata store in {run_dir} records no pipeline run{of} yet")
        return latest
    store = open_store(run_dir)
    context = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    if context is None:
        raise RunRecordError(f"the metadata store in {run_dir} has no run {run_id!r}")
    return PipelineRun(store, context)


@dataclasses.dataclass
class AbandonedExecution:
    component: str
    execution_id: int
    run_id: str
    removed: List[str]  # partial output folders deleted

    def describe(self) -> str:
        removed = f"; removed {len(self.removed)} partial folder(s): {', '.join(self.removed)}" if self.removed else ""
        return f"{self.component} (execution {self.execution_id}) of interrupted run {self.run_id}: marked CANCELED{removed}"


@contextlib.contextmanager
def one_run_at_a_time(run_dir) -> Iterator[None]:
    """Holds the run folder's lock for a run. The training and release pipelines share a run folder's
    store, and each marks what an earlier run left RUNNING as interrupted (`abandon_interrupted`), so
    two runs at once would cancel each other's executions: the second one stops here instead."""
    path = pathlib.Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise RunRecordError(f"another musicrec run is using {run_dir} ({lock.read().strip() or 'unknown process'}); "
                                 "a run folder takes one run at a time: wait for it, or give another run folder") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def abandon_interrupted(run_dir, pipeline_root) -> List[AbandonedExecution]:
    """Marks every execution still NEW or RUNNING as CANCELED (with the reason in its `abandoned`
    property) and deletes the output folders it had started. Call it before a run starts: with
    one run at a time per run folder, an execution still active then was interrupted."""
    if not (pathlib.Path(run_dir) / METADATA_FILE).is_file():
        return []
    store = open_store(run_dir)
    abandoned = []
    for execution in store.get_executions():
        if execution.last_known_state not in ACTIVE:
            continue
        component = component_of(store, execution) or execution.type
        removed = _remove_partial_folders(store, storage.path(pipeline_root) / component, execution)
        execution.last_known_state = Execution.CANCELED
        execution.custom_properties[ABANDONED_PROPERTY].string_value = (
            "interrupted: still running when the next run started; partial outputs removed")
        store.put_executions([execution])
        abandoned.append(AbandonedExecution(component, execution.id, _run_id_of(store, execution), removed))
    return abandoned


def _run_id_of(store: metadata_store.MetadataStore, execution: metadata_store_pb2.Execution) -> str:
    run_type = store.get_context_type(RUN_CONTEXT).id
    return next((c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == run_type), "unknown")


def _remove_partial_folders(store, component_dir: epath.Path, execution: metadata_store_pb2.Execution) -> List[str]:
    """The folders TFX made for this execution (<component>/<output>/<execution id>, its scratch and
    stateful working folders under .system/), unless an artifact in MLMD points at one."""
    system = component_dir / SYSTEM_DIR
    candidates = [output / str(execution.id) for output in component_dir.glob("*") if output.name != SYSTEM_DIR]
    candidates.append(system / "executor_execution" / str(execution.id))
    candidates.extend(_stateful_folders(store, system / STATEFUL_DIR, execution))
    removed = []
    for folder in sorted(candidates):
        if folder.is_dir() and not store.get_artifacts_by_uri(str(folder)):
            folder.rmtree()
            removed.append(str(folder))
    return removed


def _stateful_folders(store, stateful_root: epath.Path, execution: metadata_store_pb2.Execution) -> List[epath.Path]:
    """The stateful working folder(s) of an execution. Where the execution records its folder's
    name, that one. TFX 1.16's LocalDagRunner records none (its launcher names the folder by a
    fresh uuid and deletes it once the execution succeeds), so then: the folders no other
    execution records that were made after this execution was registered. Runs of a run folder
    are sequential, so none of those belongs to a live or complete execution; a folder from
    before (a failed execution's, which TFX keeps) is left alone."""
    if STATEFUL_DIR_PROPERTY in execution.custom_properties:
        return [stateful_root / execution.custom_properties[STATEFUL_DIR_PROPERTY].string_value]
    recorded = {e.custom_properties[STATEFUL_DIR_PROPERTY].string_value
                for e in store.get_executions() if STATEFUL_DIR_PROPERTY in e.custom_properties}
    started_s = execution.create_time_since_epoch // 1000  # whole seconds, as file systems' stat gives them
    return [folder for folder in stateful_root.glob("*")
            if folder.name not in recorded and folder.stat().mtime >= started_s]
