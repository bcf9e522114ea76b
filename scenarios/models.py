"""Models logged by one version and used by another: a scikit-learn model and a custom pyfunc model, each
with a signature and an input example, registered, aliased where the client has aliases; every reader loads
each of them through every URI it can resolve and must predict exactly what the writer predicted.

The writer logs both models the way a user would, with that version's defaults (a 3.x client saves
scikit-learn models with skops, older ones with cloudpickle), registers each as version 1 of a model of its
own, and sets the alias ``champion`` on it (2.3+). Its record keeps the input example, what the writer's
in-memory models predicted on it, the URIs (``runs:/RUN/KIND_model``, ``models:/NAME/1``,
``models:/NAME@champion`` and, for a 3.x writer, the logged model's ``models:/m-...``) and, per URI, the
writer's own view of the model: the MLmodel file as stored (flavors, signature, mlflow_version, run id,
input example info: every key; its creation time in epoch milliseconds) and the signature as the loader
parses it. A reader downloads each URI's
MLmodel and loads the model through the same URI with ``mlflow.pyfunc.load_model``, then predicts on the
input example. Every load is attempted; when any fails (a loader that cannot resolve the URI, parse the
MLmodel or unpickle the model), the read raises one error naming each failed load (model, writer's
version, URI, error), caused by the first failure, so the harness records the read as failed with the
loader's traceback (the others' are in the step's log).

The custom model's class is defined here, in a module the driver loads under a name that is not importable
(it is not in sys.modules): cloudpickle therefore pickles the class by value, methods and all, and a reader
needs neither this file nor code_paths to unpickle it; what it needs is a cloudpickle (and Python) that can
read what the writer's cloudpickle wrote. Routes a reader's client has no API for (aliases before 2.3,
logged-model URIs before 3.0) are not attempted; harness/data/fields.toml removes them from the comparison,
with a note. What does not live here: the registry's own fields (registry.py, registry_aliases.py) and
3.x logged-model entities (logged_models.py).
"""

import calendar
import datetime
import inspect
import os
import sys
import tempfile
import traceback

import mlflow
import mlflow.pyfunc
import yaml
from mlflow.tracking import MlflowClient

from common import Window, expect, num

REQUIRES = ()
STORE_REQUIRES = {"file": ("file_store_registry",), "file_to_sqlite": ("file_store_registry",)}
PACKAGES = ("scikit-learn",)
SHOWN = 400  # characters of a loader's error kept in the failure's one line (the traceback has it all)
DEFAULT = False  # a new env per version (scikit-learn) and several model loads per record: only when named

EXPERIMENT = "compat-models"
ALIAS = "champion"
COLUMNS = ["x1", "x2"]
TRAIN = [[0.0, 0.1], [0.2, 0.4], [0.4, 0.1], [0.5, 0.9], [0.9, 0.2], [1.0, 1.0],
         [1.3, 0.3], [1.5, 1.6], [1.8, 0.8], [2.0, 2.1], [2.4, 1.9], [2.6, 2.8]]  # fmt: skip
LABELS = [0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1]
EXAMPLE = [[0.1, 0.2], [1.1, 0.9], [2.2, 2.0], [0.7, 1.7], [1.9, 0.4]]


class CompatScaler(mlflow.pyfunc.PythonModel):
    """A custom pyfunc model: y = x1 * scale + x2 - offset, elementwise (exact in float64 on every numpy)."""

    def __init__(self, scale, offset):
        self.scale = scale
        self.offset = offset

    def predict(self, context, model_input, params=None):
        return (model_input["x1"] * self.scale + model_input["x2"] - self.offset).to_numpy()


def _frame(rows):
    import pandas

    return pandas.DataFrame([[float(v) for v in row] for row in rows], columns=list(COLUMNS))


def _canonical(predictions):
    """Predictions as comparable JSON: a list of values, each float as its repr, each integer as an int."""
    import numpy

    out = []
    for value in numpy.asarray(predictions).ravel().tolist():
        if isinstance(value, float):
            out.append(num(value))
        elif isinstance(value, (bool, int, str)) or value is None:
            out.append(value)
        else:
            out.append(repr(value))
    return out


def _columns(schema):
    """A schema as [[name, type], ...], the way every client version can say it (None when absent)."""
    if schema is None:
        return None
    cols = []
    for spec in schema.inputs:
        kind = getattr(spec, "type", None)
        cols.append([getattr(spec, "name", None), getattr(kind, "name", None) or str(kind)])
    return cols


def _signature(signature):
    if signature is None:
        return None
    return {"inputs": _columns(signature.inputs), "outputs": _columns(signature.outputs)}


def _epoch_ms(text):
    """MLmodel's utc_time_created (``str(datetime.utcnow())``, naive UTC) in epoch milliseconds: a time the
    writer's client generated, held to the write window, and masked like every clock time by the gate's
    differential pass. Text in another form is kept as it is (and compared as text)."""
    for form in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            when = datetime.datetime.strptime(text, form)
        except (TypeError, ValueError):
            continue
        return calendar.timegm(when.timetuple()) * 1000 + when.microsecond // 1000
    return text


def _mlmodel(uri):
    """The MLmodel file behind ``uri`` as stored: every key, downloaded through the tracking server (its
    creation time in epoch milliseconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        with open(os.path.join(local, "MLmodel")) as fh:
            mlmodel = yaml.safe_load(fh)
    if "utc_time_created" in mlmodel:
        mlmodel["utc_time_created"] = _epoch_ms(mlmodel["utc_time_created"])
    return mlmodel


def _load(uri):
    with tempfile.TemporaryDirectory() as tmp:
        if "dst_path" in inspect.signature(mlflow.pyfunc.load_model).parameters:
            return mlflow.pyfunc.load_model(uri, dst_path=tmp)
        return mlflow.pyfunc.load_model(uri)


def _view(uri, example):
    """What a client sees of the model at ``uri``: its MLmodel, the signature the loader parsed, and its
    predictions on the input example."""
    mlmodel = _mlmodel(uri)
    model = _load(uri)
    return {
        "mlmodel": mlmodel,
        "signature": _signature(model.metadata.signature),
        "predictions": _canonical(model.predict(example)),
    }


class ModelLoadError(Exception):
    """A model could not be read or loaded through one of its URIs (the loader's exception is the cause)."""


def _log(flavor, what, path, name, **kwargs):
    """Log ``what`` with ``flavor``'s log_model at ``path``, registered as ``name``, the way this client
    version spells it (3.x: ``name=``; before: ``artifact_path=``)."""
    params = inspect.signature(flavor.log_model).parameters
    if "name" in params:
        kwargs["name"] = path
    else:
        kwargs["artifact_path"] = path
    if flavor is mlflow.pyfunc:
        kwargs["python_model"] = what
    else:
        kwargs["sk_model"] = what
    return flavor.log_model(registered_model_name=name, **kwargs)


def write(ctx):
    import mlflow.sklearn
    from mlflow.models.signature import infer_signature
    from sklearn.linear_model import LogisticRegression

    window = Window()
    client = ctx.client
    example = _frame(EXAMPLE)
    classifier = LogisticRegression(random_state=0).fit(_frame(TRAIN), LABELS)
    scaler = CompatScaler(2.5, 0.75)
    made = {
        "sklearn": (mlflow.sklearn, classifier, classifier.predict(example)),
        "pyfunc": (mlflow.pyfunc, scaler, scaler.predict(None, example)),
    }
    mlflow.set_experiment(EXPERIMENT)
    models = {}
    with mlflow.start_run(tags=ctx.tags) as run:
        run_id = run.info.run_id
        for kind, (flavor, what, predicted) in sorted(made.items()):
            name, path = f"compat-{kind}-{ctx.token}", f"{kind}_model"
            signature = infer_signature(example, predicted)
            info = _log(flavor, what, path, name, signature=signature, input_example=example)
            version = str(getattr(info, "registered_model_version", None) or "1")
            uris = {"runs": f"runs:/{run_id}/{path}", "version": f"models:/{name}/{version}"}
            if hasattr(client, "set_registered_model_alias"):
                client.set_registered_model_alias(name, ALIAS, version)
                uris["alias"] = f"models:/{name}@{ALIAS}"
            if str(getattr(info, "model_uri", "")).startswith("models:/m-"):
                uris["logged"] = info.model_uri
            # The writer's own view, read back through the server, with what it sent laid over it.
            view = _view(uris["runs"], example)
            created = view["mlmodel"].get("utc_time_created")
            if isinstance(created, int):  # generated by the writer's client: within the write step
                window.check("MLmodel utc_time_created", created)
            sent = {
                "predictions": _canonical(predicted),
                "signature": _signature(signature),
                "mlmodel": {"mlflow_version": mlflow.__version__, "run_id": run_id},
            }
            view = expect(view, sent)
            models[kind] = {
                "_kind": "model_load",
                "name": name,
                "version": version,
                "uris": uris,
                "routes": {route: view for route in uris},
            }
    return {
        "run_id": run_id,
        "input_example": {"columns": list(COLUMNS), "data": EXAMPLE},
        "models": models,
        "window": window.close(),
    }


def _can(route):
    """Whether this client has the API to resolve a route at all (aliases: 2.3; logged models: 3.0)."""
    client = MlflowClient()
    if route == "alias":
        return hasattr(client, "get_model_version_by_alias")
    if route == "logged":
        return hasattr(client, "get_logged_model")
    return True


def _short(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:SHOWN]}" + ("…" if len(text) > SHOWN else "")


def read(ctx, record):
    """Every model through every route this client has, all attempted; when any failed, one ModelLoadError
    naming each failed load (model, writer's version, URI, error), caused by the first one (its traceback
    is the read's); every failure's traceback is printed to the step's log."""
    example = _frame(record["input_example"]["data"])
    models, failures, attempts = {}, [], 0
    for kind, written in sorted(record["models"].items()):
        routes = {}
        by = written["routes"]["runs"]["mlmodel"].get("mlflow_version")
        for route, uri in sorted(written["uris"].items()):
            if not _can(route):
                continue  # fields.toml: model_load.routes.<route> is not compared for this reader
            attempts += 1
            try:
                routes[route] = _view(uri, example)
            except Exception as exc:
                failures.append((f"the {kind} model (MLflow {by}) through {uri}: {_short(exc)}", exc))
                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        models[kind] = {**written, "routes": routes}
    if failures:
        listed = "; ".join(text for text, _ in failures)
        raise ModelLoadError(f"{len(failures)} of {attempts} model loads failed: {listed}") from failures[0][
            1
        ]
    return {**record, "models": models}
