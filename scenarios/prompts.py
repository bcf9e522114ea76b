"""The prompt registry (2.21+): a prompt registered with a template, a commit message, a prompt-level tag and
a version tag; a second version; an alias set, another moved from version 1 to version 2; each version loaded
by number and each alias loaded and resolved. Read back in full by every client that has the registry: the
prompt's name and user tags; every version's template text, commit message, user tags, aliases and creation
time; the version each alias resolves to. Not a default scenario: `--scenarios prompts` runs it.

Two client APIs exist, and both store a prompt the same way (a registered model tagged
`mlflow.prompt.is_prompt`, each version a model version whose tag `mlflow.prompt.text` is the template), so a
prompt written through either is read through either: up to 3.0.x `register_prompt(..., version_metadata=...,
tags=...)` returns a `Prompt` whose `tags` are the prompt's and `version_metadata` the version's; from 3.1
`register_prompt(..., tags=...)` returns a `PromptVersion` whose `tags` are the version's (and are also set on
the prompt), the prompt's own tags come from `get_prompt(name).tags` and are set with `set_prompt_tag`. The
snapshot below is the same whichever API a client has. Tags in MLflow's namespaces (`mlflow.*`, `_mlflow*`,
which 3.x adds by itself, such as the prompt type and the experiments a prompt was used in) are not what the
client sent and are left out. What does not live here: the comparison (harness/verify.py)."""

import inspect

from common import Window, expect

REQUIRES = ("prompt_registry",)
DEFAULT = False

TEMPLATES = {
    "1": "Answer {{question}} in the voice of a {{style}} assistant.",
    "2": "Answer {{question}} in the voice of a {{style}} assistant. Greet with {{greeting}}.",
}
COMMITS = {"1": "first version", "2": "add a greeting"}
VERSION_TAGS = {"1": {"author": "alice"}, "2": {"author": "bob"}}
PROMPT_TAGS = {"team": "platform"}


def _user(tags):
    return {k: v for k, v in (tags or {}).items() if not (k.startswith("mlflow.") or k.startswith("_mlflow"))}


def _legacy_api(client):
    """Up to 3.0.x: register_prompt takes version_metadata (version tags) and tags (the prompt's)."""
    return "version_metadata" in inspect.signature(client.register_prompt).parameters


def _register(client, name, version):
    if _legacy_api(client):
        return client.register_prompt(name, TEMPLATES[version], commit_message=COMMITS[version],
                                      version_metadata=dict(VERSION_TAGS[version]),
                                      tags=dict(PROMPT_TAGS) if version == "1" else None)  # fmt: skip
    prompt = client.register_prompt(name, TEMPLATES[version], commit_message=COMMITS[version],
                                    tags=dict(VERSION_TAGS[version]))  # fmt: skip
    if version == "1":
        for key, value in PROMPT_TAGS.items():
            client.set_prompt_tag(name, key, value)
    return prompt


def _version_tags(prompt):
    if hasattr(prompt, "version_metadata"):  # the legacy Prompt: its tags are the prompt's
        return _user(prompt.version_metadata)
    return _user(prompt.tags)


def _prompt_tags(client, name, loaded):
    if hasattr(loaded, "version_metadata"):
        return _user(loaded.tags)
    return _user(client.get_prompt(name).tags)


def _snapshot(client, record):
    name = record["name"]
    versions = {}
    loaded = None
    for number in sorted(record["versions"]):
        loaded = client.load_prompt(f"prompts:/{name}/{number}")
        versions[number] = {
            "version": str(loaded.version),
            "template": loaded.template,
            "commit_message": loaded.commit_message,
            "tags": _version_tags(loaded),
            "aliases": sorted(loaded.aliases or []),
            "creation_timestamp": loaded.creation_timestamp,
        }
    aliases = {}
    for alias in sorted(record["aliases"]):
        by_alias = client.load_prompt(f"prompts:/{name}@{alias}")
        aliases[alias] = {"version": str(by_alias.version), "template": by_alias.template}
    return {"prompt": {"name": name, "tags": _prompt_tags(client, name, loaded)}, "versions": versions,
            "aliases": aliases}  # fmt: skip


def write(ctx):
    window = Window()
    client = ctx.client
    name = f"compat-prompt-{ctx.token}"
    for version in ("1", "2"):
        _register(client, name, version)
    client.set_prompt_alias(name, "production", 1)
    client.set_prompt_alias(name, "staging", 1)
    client.set_prompt_alias(name, "staging", 2)  # moved
    record = {"name": name, "versions": ["1", "2"], "aliases": ["production", "staging"]}
    snap = _snapshot(client, record)
    for number, version in snap["versions"].items():
        window.check(f"prompt version {number} creation_timestamp", version["creation_timestamp"])
    sent = {
        "prompt": {"name": name, "tags": PROMPT_TAGS},
        "versions": {
            number: {"version": number, "template": TEMPLATES[number], "commit_message": COMMITS[number],
                     "tags": VERSION_TAGS[number], "aliases": {"1": ["production"], "2": ["staging"]}[number]}
            for number in ("1", "2")
        },
        "aliases": {"production": {"version": "1", "template": TEMPLATES["1"]},
                    "staging": {"version": "2", "template": TEMPLATES["2"]}},
    }  # fmt: skip
    snap = expect(snap, sent)
    return {**record, **snap, "window": window.close()}


def read(ctx, record):
    return {**record, **_snapshot(ctx.client, record)}
