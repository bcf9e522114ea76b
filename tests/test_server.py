from harness.server import StartFailure, classify_exit, launch
from harness.versions import MlflowVersion

V = MlflowVersion.parse


def test_schema_refusal_is_recognised() -> None:
    log = (
        "2026/11/25 ERROR mlflow.cli: Detected out-of-date database schema (found version 0584bdc529eb, "
        "but expected 97727af70f4d). Take a backup of your database, then run 'mlflow db upgrade'\n"
    )
    kind, line = classify_exit(log)
    assert kind is StartFailure.REFUSED_SCHEMA
    assert line.startswith("Detected out-of-date database schema (found version 0584bdc529eb")


def test_port_and_crash() -> None:
    assert classify_exit("[ERROR] Connection in use: ('127.0.0.1', 5000)\n")[0] is StartFailure.PORT_TAKEN
    assert classify_exit("OSError: [Errno 98] Address already in use\n")[0] is StartFailure.PORT_TAKEN
    kind, line = classify_exit("Traceback...\nMlflowException: boom\n\n")
    assert kind is StartFailure.CRASHED and line == "MlflowException: boom"


def test_launch_flags_follow_version_facts() -> None:
    old = launch(
        V("1.22.0"), store_uri="sqlite:///x", artifacts_dir="/a", host="127.0.0.1", port=1, file_store=False
    )
    assert "--serve-artifacts" not in old.args and old.artifact_mode.startswith("direct")
    new = launch(V("3.17.2"), store_uri="/m", artifacts_dir="/a", host="127.0.0.1", port=1, file_store=True)
    assert new.args[new.args.index("--artifacts-destination") + 1] == "/a"
    assert new.env["MLFLOW_ALLOW_FILE_STORE"] == "true" and new.artifact_mode == "proxied"
    mid = launch(V("2.22.5"), store_uri="/m", artifacts_dir="/a", host="127.0.0.1", port=1, file_store=True)
    assert "MLFLOW_ALLOW_FILE_STORE" not in mid.env
