"""Drives a live node through the Python client generated from its own
OpenAPI document (`scripts/dev client`), checking every answer.

    python client_flow.py --base-url http://127.0.0.1:PORT --token ADMIN_JWT

The node runs the demo agents `echo` (returns its input) and `sleep` (waits
`inputData.ms`). The program creates an echo task and waits for COMPLETED,
finds it in a list filtered by an RFC 3339 date, creates a long sleep task
and cancels it while it runs, and cancels a task of a bare-array batch that is
scheduled an hour ahead. Every wait has a deadline; any surprise exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import httpx
from taskherd_client import AuthenticatedClient
from taskherd_client.api.tasks import (
    cancel_task,
    create_task,
    create_tasks_batch,
    get_task,
    list_tasks,
    task_statistics,
)
from taskherd_client.models import (
    BatchCreateResult,
    CreateTaskRequest,
    Priority,
    Statistics,
    Task,
    TaskPage,
    TaskStatus,
)
from taskherd_client.types import Response

T = TypeVar("T")

DEADLINE_S = 30.0


class FlowError(Exception):
    """An answer that is not the one the flow expects."""


def expect(what: str, response: Response[Any], status: HTTPStatus, kind: type[T]) -> T:
    """The parsed answer, when it has `status` and the type `kind`."""
    if response.status_code != status or not isinstance(response.parsed, kind):
        body = response.content[:500].decode("utf-8", "replace")
        raise FlowError(
            f"{what}: expected {status.value} with a {kind.__name__}, "
            f"got {response.status_code.value}: {body}"
        )
    return response.parsed


def check(what: str, condition: bool) -> None:
    if not condition:
        raise FlowError(what)


def wait_for_status(client: AuthenticatedClient, task_id: str, wanted: TaskStatus) -> Task:
    """Polls the task until it has `wanted`, for at most DEADLINE_S."""

    def read() -> Task:
        return expect(
            f"get {task_id}",
            get_task.sync_detailed(client=client, id=task_id),
            HTTPStatus.OK,
            Task,
        )

    return wait_until(f"{task_id} reaches {wanted.value}", read, lambda t: t.status == wanted)


def wait_until(what: str, probe: Callable[[], T], done: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise FlowError(f"timed out after {DEADLINE_S} s waiting until {what}: {value}")
        time.sleep(0.05)


def as_datetime(unix_ms: int) -> datetime.datetime:
    """The instant `unix_ms`, exactly (a float division would round it)."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return epoch + datetime.timedelta(milliseconds=unix_ms)


def flow(client: AuthenticatedClient) -> None:
    # An echo task runs to COMPLETED and returns its input.
    created = expect(
        "create echo task",
        create_task.sync_detailed(
            client=client,
            body=CreateTaskRequest(
                agent_id="echo",
                task_type="client-flow",
                input_data={"hello": "generated client"},
                priority=Priority.HIGH,
            ),
        ),
        HTTPStatus.CREATED,
        Task,
    )
    check(
        f"a new task is QUEUED, PROCESSING or already COMPLETED: {created.status}",
        created.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.COMPLETED),
    )
    done = wait_for_status(client, created.id, TaskStatus.COMPLETED)
    check(
        f"echo returns its input: {done.output_data!r}",
        done.output_data == {"hello": "generated client"},
    )
    check("the priority is kept", done.priority == Priority.HIGH)

    # It is listed, with startDate as a date-time (sent as RFC 3339).
    page = expect(
        "list echo tasks",
        list_tasks.sync_detailed(
            client=client,
            agent_id="echo",
            task_type="client-flow",
            start_date=as_datetime(created.created_at),
            end_date=created.created_at,
            limit=100,
        ),
        HTTPStatus.OK,
        TaskPage,
    )
    listed = [t.id for t in page.tasks]
    check(f"the listed page holds the task: {listed}", created.id in listed)
    check(f"totalCount counts the page: {page.total_count}", page.total_count == len(listed))

    stats = expect(
        "statistics",
        task_statistics.sync_detailed(
            client=client,
            agent_id="echo",
            start_date=as_datetime(created.created_at),
        ),
        HTTPStatus.OK,
        Statistics,
    )
    check(
        f"statistics count the completed task: {stats.completed_tasks}", stats.completed_tasks >= 1
    )

    # A long sleep task is cancelled while it runs.
    sleeping = expect(
        "create sleep task",
        create_task.sync_detailed(
            client=client,
            body=CreateTaskRequest(
                agent_id="sleep", task_type="client-flow", input_data={"ms": 60_000}
            ),
        ),
        HTTPStatus.CREATED,
        Task,
    )
    wait_for_status(client, sleeping.id, TaskStatus.PROCESSING)
    cancelled = expect(
        "cancel sleep task",
        cancel_task.sync_detailed(client=client, id=sleeping.id),
        HTTPStatus.OK,
        Task,
    )
    check(f"cancel answers CANCELLED: {cancelled.status}", cancelled.status == TaskStatus.CANCELLED)
    again = expect(
        "read cancelled task",
        get_task.sync_detailed(client=client, id=sleeping.id),
        HTTPStatus.OK,
        Task,
    )
    check(f"the task stays CANCELLED: {again.status}", again.status == TaskStatus.CANCELLED)

    # A bare-array batch: one task scheduled an hour ahead (Redis' clock), cancelled while QUEUED.
    batch = expect(
        "create batch",
        create_tasks_batch.sync_detailed(
            client=client,
            body=[
                CreateTaskRequest(
                    agent_id="echo",
                    task_type="client-flow",
                    run_at=created.created_at + 3_600_000,
                )
            ],
        ),
        HTTPStatus.CREATED,
        BatchCreateResult,
    )
    check(f"one task created: {batch.created_count}", batch.created_count == 1)
    scheduled = batch.tasks[0]
    check(
        f"a scheduled task waits QUEUED: {scheduled.status}", scheduled.status == TaskStatus.QUEUED
    )
    cancelled = expect(
        "cancel scheduled task",
        cancel_task.sync_detailed(client=client, id=scheduled.id),
        HTTPStatus.OK,
        Task,
    )
    check(f"cancel answers CANCELLED: {cancelled.status}", cancelled.status == TaskStatus.CANCELLED)

    # A second cancel is refused: the task already ended.
    refused = cancel_task.sync_detailed(client=client, id=scheduled.id)
    check(
        f"a second cancel answers 409: {refused.status_code}",
        refused.status_code == HTTPStatus.CONFLICT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    client = AuthenticatedClient(
        base_url=args.base_url, token=args.token, timeout=httpx.Timeout(10.0)
    )
    try:
        with client:
            flow(client)
    except FlowError as e:
        print(f"client_flow: FAILED: {e}", file=sys.stderr)
        return 1
    print("client_flow: created, completed, listed, cancelled: all answers as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
