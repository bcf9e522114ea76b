"""The basic-auth app (cells with the `auth` feature, harness/features/auth.py): what each user may do.

Write (as the admin, whose credentials every client process gets): four users, one per permission level
(READ, EDIT, MANAGE, NO_PERMISSIONS), each given that level on one experiment and on one registered model,
through the writing client's own auth client (`mlflow.server.get_app_client("basic-auth")`: 2.x's
`create_experiment_permission`/`create_registered_model_permission`, or 3.x's `grant_user_permission` where
the client has only that). The server's default permission is READ, so NO_PERMISSIONS is an explicit deny.
The record holds the expected outcome of every action for every user, from MLflow's documented permission
table (READ: read; EDIT: read and update; MANAGE: everything, permissions included; NO_PERMISSIONS: nothing).

Read: every user logs in with the reading client and tries every action once, through the client API
(`MlflowClient` with the user's MLFLOW_TRACKING_USERNAME/PASSWORD) and as raw HTTP with `requests` for the
exact status: read the experiment and a run, create a run, log a param, rename the experiment (and back),
delete it (and restore it), manage its permissions; read, update and delete in the registered model (the
delete is of a version that does not exist: the auth layer answers 403 before the handler could answer 404),
manage its permissions. Anonymous and wrong-password requests must get 401, forbidden ones 403. The
observed outcome matrix is compared with the expected one, so a user that can do what it should not is a
difference naming the user and the endpoint. Whatever a user changed is put back by the admin, so that
every later reader finds the same state. Runs in Python 3.8+ with mlflow (and its `requests`) only.
"""

import os
import re
import uuid

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

REQUIRES = ("auth_app",)
NEEDS = ("auth",)

LEVELS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
RANK = {"NO_PERMISSIONS": 0, "READ": 1, "EDIT": 2, "MANAGE": 3}
DESCRIPTION = "a registered model under basic auth"
ALLOWED = "allowed"
TIMEOUT_S = 60

# Every action a user tries, with the least level that may do it (MLflow's permission table).
EXPERIMENT_ACTIONS = (
    ("MlflowClient.get_experiment", "READ"),
    ("GET /api/2.0/mlflow/experiments/get", "READ"),
    ("GET /api/2.0/mlflow/runs/get", "READ"),
    ("MlflowClient.create_run", "EDIT"),
    ("POST /api/2.0/mlflow/runs/create", "EDIT"),
    ("POST /api/2.0/mlflow/runs/log-parameter", "EDIT"),
    ("POST /api/2.0/mlflow/experiments/update", "EDIT"),
    ("POST /api/2.0/mlflow/experiments/delete", "MANAGE"),
    ("manage experiment permissions", "MANAGE"),
)
MODEL_ACTIONS = (
    ("MlflowClient.get_registered_model", "READ"),
    ("GET /api/2.0/mlflow/registered-models/get", "READ"),
    ("PATCH /api/2.0/mlflow/registered-models/update", "EDIT"),
    ("DELETE /api/2.0/mlflow/model-versions/delete", "MANAGE"),
    ("manage registered-model permissions", "MANAGE"),
)
REFUSED_ANONYMOUS = "refused: 401"
PROBE = "GET /api/2.0/mlflow/experiments/get"


def _uri():
    return mlflow.get_tracking_uri().rstrip("/")


def _admin():
    return os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]


def _auth_client():
    from mlflow.server import get_app_client

    return get_app_client("basic-auth", tracking_uri=_uri())


def _grant(auth, kind, resource, username, level):
    """``level`` on one resource for ``username``, through the client's own auth API; the permission name
    actually granted. 3.x clients that only have the unified per-user grant express the explicit deny as
    DENY: their servers refuse NO_PERMISSIONS as a resource grant ("Resource-level grants accept only:
    ('DENY', 'EDIT', 'MANAGE', 'READ', 'USE')")."""
    if kind == "experiment" and hasattr(auth, "create_experiment_permission"):
        auth.create_experiment_permission(resource, username, level)
        return level
    if kind == "registered_model" and hasattr(auth, "create_registered_model_permission"):
        auth.create_registered_model_permission(resource, username, level)
        return level
    from mlflow.server.auth import permissions

    granted = level
    if level == "NO_PERMISSIONS" and hasattr(permissions, "DENY"):
        granted = permissions.DENY.name
    auth.grant_user_permission(username, kind, resource, granted)
    return granted


def _key(level, user):
    return "{} user {}".format(level, user["username"])


def expected_outcomes(users):
    out = {}
    for level, user in sorted(users.items()):
        row = {}
        for action, least in EXPERIMENT_ACTIONS + MODEL_ACTIONS:
            row[action] = ALLOWED if RANK[level] >= RANK[least] else "refused: 403"
        out[_key(level, user)] = row
    out["anonymous"] = {PROBE: REFUSED_ANONYMOUS}
    out["READ user with a wrong password"] = {PROBE: REFUSED_ANONYMOUS}
    return out


def write(ctx):
    auth = _auth_client()
    users = {}
    for level in LEVELS:
        name = "compat-{}-{}".format(ctx.token, level.lower().replace("_", ""))
        password = f"pw-{uuid.uuid4().hex}"
        auth.create_user(name, password)
        users[level] = {"username": name, "password": password}
    name = f"compat-auth-{ctx.token}"
    experiment_id = ctx.client.create_experiment(name)
    run_id = ctx.client.create_run(experiment_id).info.run_id
    model = f"compat-auth-model-{ctx.token}"
    ctx.client.create_registered_model(model, description=DESCRIPTION)
    for level, user in users.items():
        user["granted"] = {
            "experiment": _grant(auth, "experiment", experiment_id, user["username"], level),
            "registered_model": _grant(auth, "registered_model", model, user["username"], level),
        }
    return {
        "users": users,
        "experiment": {"id": experiment_id, "name": name},
        "run_id": run_id,
        "model": model,
        "outcomes": expected_outcomes(users),
    }


# -- the reads ----------------------------------------------------------------------------------------
def _status_outcome(resp, allowed):
    if allowed(resp):
        return ALLOWED
    if resp.status_code in (401, 403):
        return f"refused: {resp.status_code}"
    return f"HTTP {resp.status_code}: {resp.text.strip()[:120]}"


def _ok(resp):
    return 200 <= resp.status_code < 300


def _not_found_behind_auth(resp):
    """The auth layer let the request through and the handler found nothing (a harmless probe)."""
    return resp.status_code == 404 and "RESOURCE_DOES_NOT_EXIST" in resp.text


def _client_outcome(call):
    """What a client call as one user came to: allowed, refused (401/403), or the error the server answered
    with. A call that got no answer at all is not an outcome: it propagates, and the driver files it as the
    machine's trouble (`error`), never as a permission difference."""
    try:
        call()
    except MlflowException as exc:
        text = str(exc)
        if "failed with exception" in text:  # MLflow's wording when the request got no response
            raise
        code = re.search(r"\b(401|403)\b", text)
        if code:
            return f"refused: {code.group(1)}"
        if "PERMISSION_DENIED" in text:
            return "refused: 403"
        if "UNAUTHENTICATED" in text:
            return "refused: 401"
        return "error: {}: {}".format(
            type(exc).__name__,
            text.strip().splitlines()[0][:160] if text.strip() else "",
        )
    return ALLOWED


class As:
    """MLflow client calls with one user's credentials (the client reads them from the environment)."""

    def __init__(self, username, password):
        self.creds = (username, password)

    def __enter__(self):
        self.saved = _admin()
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = self.creds

    def __exit__(self, *exc):
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = self.saved
        return False


def _http(method, path, creds, **kwargs):
    return requests.request(method, _uri() + path, auth=creds, timeout=TIMEOUT_S, **kwargs)


def _admin_must(method, path, **kwargs):
    resp = _http(method, path, _admin(), **kwargs)
    if not _ok(resp):
        raise AssertionError(
            f"the admin could not put back {method} {path}: HTTP {resp.status_code} {resp.text[:200]}"
        )
    return resp


def _manage_probe(kind, resource, creds):
    """Managing a resource's permissions with the reader's own auth API (2.x: read one's permission on it;
    3.x: grant a user that does not exist, which the auth layer must refuse before the handler finds no
    such user). Returns (method, path, kwargs, allowed)."""
    from mlflow.server.auth.client import AuthServiceClient

    if kind == "experiment" and hasattr(AuthServiceClient, "get_experiment_permission"):
        params = {"experiment_id": resource, "username": creds[0]}
        return "GET", "/api/2.0/mlflow/experiments/permissions/get", {"params": params}, _ok
    if kind == "registered_model" and hasattr(AuthServiceClient, "get_registered_model_permission"):
        params = {"name": resource, "username": creds[0]}
        return "GET", "/api/2.0/mlflow/registered-models/permissions/get", {"params": params}, _ok
    body = {
        "username": f"compat-nobody-{uuid.uuid4().hex[:8]}",
        "resource_type": kind,
        "resource_id": resource,
        "permission": "READ",
    }
    return "POST", "/api/3.0/mlflow/users/permissions/grant", {"json": body}, _not_found_behind_auth


def _try_user(record, creds, scratch_key):
    exp = record["experiment"]
    model = record["model"]
    client = MlflowClient()
    out = {}
    where = {}

    def http(action, method, path, allowed=_ok, **kwargs):
        resp = _http(method, path, creds, **kwargs)
        out[action] = _status_outcome(resp, allowed)
        where[action] = f"{method} {path}"
        return resp

    with As(*creds):
        out["MlflowClient.get_experiment"] = _client_outcome(lambda: client.get_experiment(exp["id"]))
        out["MlflowClient.create_run"] = _client_outcome(lambda: client.create_run(exp["id"]))
        out["MlflowClient.get_registered_model"] = _client_outcome(lambda: client.get_registered_model(model))
    http(
        "GET /api/2.0/mlflow/experiments/get",
        "GET",
        "/api/2.0/mlflow/experiments/get",
        params={"experiment_id": exp["id"]},
    )
    http(
        "GET /api/2.0/mlflow/runs/get", "GET", "/api/2.0/mlflow/runs/get", params={"run_id": record["run_id"]}
    )
    http(
        "POST /api/2.0/mlflow/runs/create",
        "POST",
        "/api/2.0/mlflow/runs/create",
        json={"experiment_id": exp["id"], "start_time": 0},
    )
    http(
        "POST /api/2.0/mlflow/runs/log-parameter",
        "POST",
        "/api/2.0/mlflow/runs/log-parameter",
        json={"run_id": record["run_id"], "key": scratch_key, "value": "1"},
    )
    resp = http(
        "POST /api/2.0/mlflow/experiments/update",
        "POST",
        "/api/2.0/mlflow/experiments/update",
        json={"experiment_id": exp["id"], "new_name": exp["name"] + "-renamed-" + scratch_key},
    )
    if _ok(resp):
        _admin_must(
            "POST",
            "/api/2.0/mlflow/experiments/update",
            json={"experiment_id": exp["id"], "new_name": exp["name"]},
        )
    resp = http(
        "POST /api/2.0/mlflow/experiments/delete",
        "POST",
        "/api/2.0/mlflow/experiments/delete",
        json={"experiment_id": exp["id"]},
    )
    if _ok(resp):
        _admin_must("POST", "/api/2.0/mlflow/experiments/restore", json={"experiment_id": exp["id"]})
    method, path, kwargs, allowed = _manage_probe("experiment", exp["id"], creds)
    http("manage experiment permissions", method, path, allowed, **kwargs)
    http(
        "GET /api/2.0/mlflow/registered-models/get",
        "GET",
        "/api/2.0/mlflow/registered-models/get",
        params={"name": model},
    )
    http(
        "PATCH /api/2.0/mlflow/registered-models/update",
        "PATCH",
        "/api/2.0/mlflow/registered-models/update",
        json={"name": model, "description": DESCRIPTION},
    )
    http(
        "DELETE /api/2.0/mlflow/model-versions/delete",
        "DELETE",
        "/api/2.0/mlflow/model-versions/delete",
        _not_found_behind_auth,
        json={"name": model, "version": "999999"},
    )
    method, path, kwargs, allowed = _manage_probe("registered_model", model, creds)
    http("manage registered-model permissions", method, path, allowed, **kwargs)
    return out, where


def read(ctx, record):
    expected = record["outcomes"]
    observed = {}
    for level, user in sorted(record["users"].items()):
        key = _key(level, user)
        row, where = _try_user(record, (user["username"], user["password"]), f"auth-{ctx.token}")
        for action, outcome in row.items():
            if outcome != expected.get(key, {}).get(action) and action in where and where[action] != action:
                row[action] = f"{where[action]} -> {outcome}"  # name the endpoint the reader used
        observed[key] = row
    params = {"experiment_id": record["experiment"]["id"]}
    anonymous = requests.get(_uri() + "/api/2.0/mlflow/experiments/get", params=params, timeout=TIMEOUT_S)
    observed["anonymous"] = {PROBE: _status_outcome(anonymous, _ok)}
    wrong = _http(
        "GET",
        "/api/2.0/mlflow/experiments/get",
        (record["users"]["READ"]["username"], "wrong"),
        params=params,
    )
    observed["READ user with a wrong password"] = {PROBE: _status_outcome(wrong, _ok)}
    return dict(record, outcomes=observed)
