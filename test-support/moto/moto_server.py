#!/usr/bin/env python3
"""moto in server mode on 127.0.0.1, plus a small control endpoint for tests.

moto's ECS tasks start RUNNING, drift towards STOPPED on every DescribeTasks
and always exit 0. flotilla's tests need to decide how a task ends, so this
wrapper runs moto in-process and:

- pins ECS tasks in the state they are put in (the state manager's
  "manual" progression with a transition count that is never reached);
- makes RunTask honour `clientToken` as ECS does: the same token on the same
  cluster with the same parameters returns the tasks started the first time
  instead of new ones; the same token with other parameters fails with
  `ConflictException` whose `resourceIds` are the tasks of the first call
  (and new tasks get `createdAt`/`startedAt`);
- makes DescribeTasks answer as ECS does: only tasks of the given cluster,
  exact ARN or id matches, and a `failures` entry with reason `MISSING` for
  every requested task it does not know (moto omits them silently); a
  deleted (INACTIVE) cluster is `ClusterNotFoundException`, as an unknown
  one;
- gives a task one container per container definition, as ECS does (moto
  makes only the first), each with its definition's name and image;
- refuses, as ECS does, a task definition whose `dependsOn` names a
  container it does not define, or waits for an essential container to
  reach SUCCESS or COMPLETE (`ClientException`);
- makes StopTask behave as ECS: a stopped task is returned unchanged, a live
  one stops with stopCode `UserInitiated` and its container exits 143;
- publishes an "ECS Task State Change" event to EventBridge on every task
  state change it makes (RunTask, StopTask and the control calls below), as
  ECS does, so rules routing them to SQS work;
- serves a control API under `/_flotilla/` (JSON in, JSON out):

  GET  /_flotilla/health
       -> {"ok": true}
  POST /_flotilla/ecs/finish-task
       {"cluster", "task", "exit_code" (int or null), "stop_code",
        "stopped_reason", "container_reason", "region"}
       marks the task STOPPED with those values (a null exit code leaves the
       container without one, as when an image cannot be pulled). An
       optional "containers": {NAME: {"exit_code", "reason"}} sets each
       named container's own exit code and reason (the others get
       "exit_code"), for tasks of several containers.
  POST /_flotilla/ecs/set-task-state
       {"cluster", "task", "status": "PROVISIONING"|"PENDING"|"ACTIVATING"|"RUNNING", "region"}
  POST /_flotilla/ecs/add-container-instance
       {"cluster", "region"} -> {"container_instance_arn", "ec2_instance_id"}
       starts a moto EC2 instance and registers it in the cluster, so tasks
       with the EC2 launch type can be placed.
  GET  /_flotilla/ec2/default-network?region=us-east-1
       -> {"subnets": [...], "security_groups": [...]} of the default VPC,
       for awsvpc (Fargate) network configurations.
  POST /_flotilla/ecs/forget-stopped-tasks
       {"cluster", "task" (optional), "region"} -> {"forgotten": [arn]}
       forgets the cluster's STOPPED tasks (or only that one, if stopped), as
       ECS does about an hour after they stop: DescribeTasks then reports
       them in `failures` with reason MISSING.
  GET  /_flotilla/ecs/run-task-count[?cluster=NAME]
       -> {"count": n}: RunTask calls that started tasks (deduplicated
       calls excluded), on every cluster or on NAME only, for tests of
       idempotent submission.

CloudWatch Logs' GetLogEvents reading forward (`startFromHead`, or a
forward token) answers as AWS does across time gaps: a page never spans a
gap of GAP_MS or more between consecutive events, and each such gap is
answered first by EMPTY_PAGES_PER_GAP pages with no events, each with a new
`nextForwardToken` (AWS scans the stream in time slices and returns the
empty ones). The end of the stream is an empty page whose forward token is
the one passed in. moto itself never returns an empty page mid-stream.

Every other request goes to moto unchanged. `POST /moto-api/reset` resets
moto and re-applies the settings above.

Usage: moto_server.py [--host 127.0.0.1] --port PORT
"""

import argparse
import datetime
import json
import os
import sys
import threading
import urllib.parse

ACCOUNT_ID = os.environ.get("MOTO_ACCOUNT_ID", "123456789012")
DEFAULT_REGION = "us-east-1"
# A transition count that is never reached: tasks stay where they are put.
NEVER = 10**12

_lock = threading.Lock()
# (account, region, cluster name, client token) -> (request fingerprint, [task arn])
_client_tokens: dict = {}
_run_task_count = 0
# cluster name -> RunTask calls that started tasks on it
_run_task_counts: dict = {}


def _pin_tasks() -> None:
    from moto.moto_api import state_manager

    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": NEVER}
    )


def _patch_task_containers() -> None:
    """One container per container definition, as ECS starts them."""
    from moto.ecs import models

    original = models.Task.__init__

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        task_definition = kwargs.get("task_definition") or args[1]
        containers = []
        for cd in task_definition.container_definitions:
            c = models.Container(task_definition)
            c.name = cd.get("name")
            c.image = cd.get("image")
            c.cpu = cd.get("cpu", 0)
            c.memory = cd.get("memory")
            c.environment = cd.get("environment")
            c.command = cd.get("command")
            containers.append(c)
        if containers:
            self.containers = containers

    models.Task.__init__ = init


def _patch_register_task_definition() -> None:
    """RegisterTaskDefinition checks container dependencies as ECS does."""
    from moto.ecs.exceptions import EcsClientException
    from moto.ecs.responses import EC2ContainerServiceResponse

    original = EC2ContainerServiceResponse.register_task_definition

    def register_task_definition(self):  # type: ignore[no-untyped-def]
        definitions = self._get_param("containerDefinitions") or []
        by_name = {d.get("name"): d for d in definitions}
        for d in definitions:
            for dep in d.get("dependsOn") or []:
                target = by_name.get(dep.get("containerName"))
                if target is None:
                    raise EcsClientException(
                        f"Container {d.get('name')} depends on container "
                        f"{dep.get('containerName')}, which is not defined in the task definition."
                    )
                if dep.get("condition") in ("SUCCESS", "COMPLETE") and target.get("essential", True):
                    raise EcsClientException(
                        "A dependency container with SUCCESS or COMPLETE condition cannot be an "
                        "essential container"
                    )
        return original(self)

    EC2ContainerServiceResponse.register_task_definition = register_task_definition


def _patch_run_task() -> None:
    """RunTask with a clientToken already used on the cluster returns the
    tasks it started then, as ECS does."""
    from moto.core.responses import ActionResult
    from moto.ecs.responses import EC2ContainerServiceResponse

    original = EC2ContainerServiceResponse.run_task

    def run_task(self):  # type: ignore[no-untyped-def]
        global _run_task_count
        token = self._get_param("clientToken")
        cluster = str(self._get_param("cluster", "default")).split("/")[-1]
        if not token:
            with _lock:
                _run_task_count += 1
                _run_task_counts[cluster] = _run_task_counts.get(cluster, 0) + 1
            return original(self)
        key = (self.current_account, self.region, cluster, token)
        fingerprint = _run_task_fingerprint(self)
        with _lock:
            entry = _client_tokens.get(key)
            if entry is not None:
                known_fingerprint, known = entry
                if known_fingerprint != fingerprint:
                    from moto.ecs.exceptions import ECSException

                    err = ECSException(
                        "ConflictException",
                        "The request could not be processed because of conflict in the current "
                        "state of the resource: the client token is already in use with a "
                        "different RunTask request.",
                    )
                    err.resourceIds = list(known)
                    raise err
                backend = self.ecs_backend
                tasks = [
                    t
                    for arn in known
                    for t in [backend.tasks.get(cluster, {}).get(arn)]
                    if t is not None
                ]
                return ActionResult({"tasks": tasks, "failures": []})
            result = original(self)
            started = []
            try:
                started = [t.task_arn for t in result.result["tasks"]]
            except Exception:  # pragma: no cover - moto internals changed
                started = []
            if started:
                _client_tokens[key] = (fingerprint, started)
                _run_task_count += 1
                _run_task_counts[cluster] = _run_task_counts.get(cluster, 0) + 1
            return result

    def timed_run_task(self):  # type: ignore[no-untyped-def]
        result = run_task(self)
        now = _now()
        for t in getattr(result, "result", {}).get("tasks", []):
            if getattr(t, "created_at", None) is None:
                t.created_at = now
                t.started_at = now
                emit_task_state_change(self.region, t)
        return result

    EC2ContainerServiceResponse.run_task = timed_run_task

    def stop_task(self):  # type: ignore[no-untyped-def]
        """StopTask as ECS does it: a stopped task is returned unchanged; a
        live one stops with stopCode UserInitiated, the given reason, and its
        container exits as on SIGTERM (143)."""
        cluster = str(self._get_param("cluster", "default"))
        task_str = str(self._get_param("task"))
        reason = self._get_param("reason") or "Task stopped by user"
        with _lock:
            try:
                t = _find_task(self.region, cluster, task_str)
            except KeyError:
                from moto.ecs.exceptions import InvalidParameterException

                raise InvalidParameterException("The referenced task was not found.")
            if t.last_status != "STOPPED":
                self.ecs_backend.stop_task(cluster, task_str, reason)
                now = _now()
                t.stop_code = "UserInitiated"
                t.stopping_at = now
                t.execution_stopped_at = now
                t.stopped_at = now
                for c in t.containers:
                    c.last_status = "STOPPED"
                    c.exitCode = 143
                emit_task_state_change(self.region, t)
            return ActionResult({"task": t})

    EC2ContainerServiceResponse.stop_task = stop_task

    def describe_tasks(self):  # type: ignore[no-untyped-def]
        """DescribeTasks as ECS answers it: the cluster's tasks only, exact
        matches, and MISSING failures for the tasks it does not know."""
        from moto.ecs.responses import DESCRIBE_TASKS_TAGS

        cluster = str(self._get_param("cluster", "default")).split("/")[-1]
        wanted = self._get_param("tasks", [])
        if not wanted:
            from moto.ecs.exceptions import InvalidParameterException

            raise InvalidParameterException("Tasks cannot be empty.")
        if self.ecs_backend._get_cluster(cluster).status == "INACTIVE":
            # A deleted cluster stays INACTIVE for a while; ECS refuses
            # calls on it as it refuses unknown clusters.
            from moto.ecs.exceptions import ECSException

            raise ECSException("ClusterNotFoundException", "The referenced cluster was inactive.")
        known = self.ecs_backend.tasks.get(cluster, {})
        tasks, failures = [], []
        for w in wanted:
            w_id = str(w).split("/")[-1]
            found = next(
                (t for arn, t in known.items() if arn == w or arn.split("/")[-1] == w_id), None
            )
            if found is None:
                failures.append({"arn": w, "reason": "MISSING"})
            else:
                found.advance()
                tasks.append(found)
        if "TAGS" in self._get_param("include", []):
            self._include_in_response(DESCRIBE_TASKS_TAGS)
        else:
            self._exclude_from_response(DESCRIBE_TASKS_TAGS)
        return ActionResult({"tasks": tasks, "failures": failures})

    EC2ContainerServiceResponse.describe_tasks = describe_tasks


# GetLogEvents: a time gap between consecutive events of at least this many
# milliseconds is answered with empty pages first, as AWS does.
GAP_MS = 5 * 60 * 1000
EMPTY_PAGES_PER_GAP = 2


def _patch_get_log_events() -> None:
    """GetLogEvents reading forward returns empty pages at time gaps, as AWS
    does (see the module's doc)."""
    from moto.logs.exceptions import InvalidParameterException
    from moto.logs.models import LogStream

    original = LogStream.get_log_events

    def parse(token):  # type: ignore[no-untyped-def]
        """`f/<index of the last event returned>[/gap<empty pages served>]`."""
        if token is None:
            return -1, 0
        try:
            if not token.startswith("f/"):
                raise ValueError(token)
            rest = token[2:]
            gaps = 0
            if "/gap" in rest:
                rest, g = rest.split("/gap", 1)
                gaps = int(g)
            return int(rest), gaps
        except (ValueError, TypeError):
            raise InvalidParameterException("The specified nextToken is invalid.")

    def get_log_events(self, start_time, end_time, limit, next_token, start_from_head):  # type: ignore[no-untyped-def]
        head = start_from_head in (True, "true", "True", 1)
        if not (head or (next_token or "").startswith("f/")):
            return original(self, start_time, end_time, limit, next_token, start_from_head)
        limit = int(limit) if limit else 10000
        events = sorted(
            (
                e
                for e in self.events
                if not (start_time and e.timestamp < start_time)
                and not (end_time and e.timestamp > end_time)
            ),
            key=lambda e: e.timestamp,
        )
        last, gaps = parse(next_token)
        start = max(last + 1, 0)
        final = len(events) - 1
        if start > final:
            # The end: the token passed in comes back unchanged.
            token = next_token or f"f/{last:056d}"
            return [], f"b/{max(start, 0):056d}", token
        if start > 0 and events[start].timestamp - events[start - 1].timestamp >= GAP_MS:
            if gaps < EMPTY_PAGES_PER_GAP:
                return [], f"b/{start:056d}", f"f/{last:056d}/gap{gaps + 1}"
        end = start
        while (
            end + 1 <= final
            and end + 1 - start < limit
            and events[end + 1].timestamp - events[end].timestamp < GAP_MS
        ):
            end += 1
        page = [e.to_response_dict() for e in events[start : end + 1]]
        return page, f"b/{start:056d}", f"f/{end:056d}"

    LogStream.get_log_events = get_log_events


def _run_task_fingerprint(response) -> str:  # type: ignore[no-untyped-def]
    """Every RunTask parameter but the client token, canonically."""
    try:
        params = json.loads(response.body or "{}")
    except (TypeError, ValueError):
        params = {}
    params.pop("clientToken", None)
    params["cluster"] = str(params.get("cluster", "default")).split("/")[-1]
    return json.dumps(params, sort_keys=True)


def forget_stopped_tasks(body: dict) -> dict:
    region = body.get("region") or DEFAULT_REGION
    cluster = str(body["cluster"]).split("/")[-1]
    only = body.get("task")
    with _lock:
        tasks = _ecs_backend(region).tasks.get(cluster, {})
        gone = [
            arn
            for arn, t in tasks.items()
            if t.last_status == "STOPPED"
            and (only is None or arn == only or arn.split("/")[-1] == str(only).split("/")[-1])
        ]
        for arn in gone:
            del tasks[arn]
        return {"forgotten": gone}


def _ecs_backend(region: str):  # type: ignore[no-untyped-def]
    from moto.ecs.models import ecs_backends

    return ecs_backends[ACCOUNT_ID][region]


def _find_task(region: str, cluster: str, task: str):  # type: ignore[no-untyped-def]
    backend = _ecs_backend(region)
    cluster_name = cluster.split("/")[-1]
    task_id = task.split("/")[-1]
    for arn, t in backend.tasks.get(cluster_name, {}).items():
        if arn.split("/")[-1] == task_id:
            return t
    raise KeyError(f"task {task} not found on cluster {cluster_name}")


def _free_resources(region: str, t) -> None:  # type: ignore[no-untyped-def]
    """A stopped task gives its container instance's CPU and memory back, as
    moto's own StopTask does."""
    arn = getattr(t, "container_instance_arn", None)
    if not arn or not t.resource_requirements:
        return
    backend = _ecs_backend(region)
    instance = backend.container_instances.get(t.cluster_name, {}).get(arn.split("/")[-1])
    if instance is not None:
        backend.update_container_instance_resources(instance, t.resource_requirements, removing=True)


def _iso(t) -> str | None:  # type: ignore[no-untyped-def]
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def emit_task_state_change(region: str, t) -> None:  # type: ignore[no-untyped-def]
    """Publishes an "ECS Task State Change" event to EventBridge, as ECS does
    on every task state change (moto's ECS does not)."""
    from moto.events.models import events_backends

    containers = []
    for c in t.containers:
        entry = {"name": c.name, "lastStatus": getattr(c, "last_status", None)}
        if getattr(c, "exitCode", None) is not None:
            entry["exitCode"] = c.exitCode
        if getattr(c, "reason", None):
            entry["reason"] = c.reason
        containers.append(entry)
    detail = {
        "taskArn": t.task_arn,
        "clusterArn": t.cluster_arn,
        "lastStatus": t.last_status,
        "desiredStatus": t.desired_status,
        "startedBy": t.started_by,
        "group": t.group,
        "overrides": t.overrides or {},
        "containers": containers,
        "containerInstanceArn": t.container_instance_arn,
        "taskDefinitionArn": t.task_definition_arn,
        "stopCode": getattr(t, "stop_code", None),
        "stoppedReason": t.stopped_reason or None,
        "createdAt": _iso(getattr(t, "created_at", None)),
        "startedAt": _iso(getattr(t, "started_at", None)),
        "stoppedAt": _iso(getattr(t, "stopped_at", None)),
    }
    detail = {k: v for k, v in detail.items() if v is not None}
    try:
        events_backends[ACCOUNT_ID][region].put_events(
            [
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Task State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [t.task_arn],
                }
            ]
        )
    except Exception as e:  # pragma: no cover - never break the ECS call
        print(f"emitting an ECS event failed: {e}", file=sys.stderr)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def finish_task(body: dict) -> dict:
    region = body.get("region") or DEFAULT_REGION
    with _lock:
        t = _find_task(region, body["cluster"], body["task"])
        exit_code = body.get("exit_code")
        if t.last_status != "STOPPED":
            _free_resources(region, t)
        t.last_status = "STOPPED"
        t.desired_status = "STOPPED"
        t.stopped_reason = body.get("stopped_reason") or "Essential container in task exited"
        t.stop_code = body.get("stop_code") or "EssentialContainerExited"
        now = _now()
        t.stopping_at = now
        t.execution_stopped_at = now
        t.stopped_at = now
        per_container = body.get("containers") or {}
        for c in t.containers:
            c.last_status = "STOPPED"
            c.exitCode = exit_code
            if body.get("container_reason"):
                c.reason = body["container_reason"]
            own = per_container.get(c.name)
            if own is not None:
                c.exitCode = own.get("exit_code")
                if own.get("reason"):
                    c.reason = own["reason"]
        emit_task_state_change(region, t)
        return {"task": t.task_arn, "status": "STOPPED"}


def set_task_state(body: dict) -> dict:
    region = body.get("region") or DEFAULT_REGION
    status = body["status"]
    if status not in ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"):
        raise ValueError(f"status: {status} is not a live task state")
    with _lock:
        t = _find_task(region, body["cluster"], body["task"])
        t.last_status = status
        if status == "RUNNING":
            t.started_at = _now()
            for c in t.containers:
                c.last_status = "RUNNING"
        emit_task_state_change(region, t)
        return {"task": t.task_arn, "status": status}


def _boto_client(service: str, region: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{os.environ['MOTO_PORT']}",
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def add_container_instance(body: dict) -> dict:
    region = body.get("region") or DEFAULT_REGION
    ec2 = _boto_client("ec2", region)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reservation = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.xlarge")
    instance_id = reservation["Instances"][0]["InstanceId"]
    ecs = _boto_client("ecs", region)
    registered = ecs.register_container_instance(
        cluster=body["cluster"],
        instanceIdentityDocument=json.dumps({"instanceId": instance_id}),
    )
    return {
        "container_instance_arn": registered["containerInstance"]["containerInstanceArn"],
        "ec2_instance_id": instance_id,
    }


def default_network(region: str) -> dict:
    ec2 = _boto_client("ec2", region)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    return {
        "subnets": [s["SubnetId"] for s in subnets],
        "security_groups": [g["GroupId"] for g in groups],
    }


def _json(start_response, status: str, payload: dict):  # type: ignore[no-untyped-def]
    data = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def make_app():  # type: ignore[no-untyped-def]
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        global _run_task_count
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/_flotilla/"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                raw = environ["wsgi.input"].read(length) if length else b""
                body = json.loads(raw) if raw else {}
                query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
                if path == "/_flotilla/health":
                    return _json(start_response, "200 OK", {"ok": True})
                if path == "/_flotilla/ecs/finish-task" and method == "POST":
                    return _json(start_response, "200 OK", finish_task(body))
                if path == "/_flotilla/ecs/set-task-state" and method == "POST":
                    return _json(start_response, "200 OK", set_task_state(body))
                if path == "/_flotilla/ecs/forget-stopped-tasks" and method == "POST":
                    return _json(start_response, "200 OK", forget_stopped_tasks(body))
                if path == "/_flotilla/ecs/add-container-instance" and method == "POST":
                    return _json(start_response, "200 OK", add_container_instance(body))
                if path == "/_flotilla/ec2/default-network":
                    region = query.get("region") or DEFAULT_REGION
                    return _json(start_response, "200 OK", default_network(region))
                if path == "/_flotilla/ecs/run-task-count":
                    with _lock:
                        if "cluster" in query:
                            count = _run_task_counts.get(query["cluster"].split("/")[-1], 0)
                        else:
                            count = _run_task_count
                        return _json(start_response, "200 OK", {"count": count})
                return _json(start_response, "404 Not Found", {"error": f"no route {method} {path}"})
            except KeyError as e:
                return _json(start_response, "404 Not Found", {"error": f"not found: {e}"})
            except (ValueError, TypeError) as e:
                return _json(start_response, "400 Bad Request", {"error": str(e)})
        if path == "/moto-api/reset" and method == "POST":
            with _lock:
                _client_tokens.clear()
            result = moto_app(environ, start_response)
            _pin_tasks()
            return result
        return moto_app(environ, start_response)

    return app


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("moto_server.py binds to loopback only")
    os.environ["MOTO_PORT"] = str(args.port)
    _pin_tasks()
    _patch_task_containers()
    _patch_register_task_definition()
    _patch_run_task()
    _patch_get_log_events()

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    run_simple(
        args.host,
        args.port,
        make_app(),
        threaded=True,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
