"""Structure of docker-compose.yml, Dockerfile and .dockerignore, kept in step with the code.

No Docker engine runs here, so these tests check what the files promise against what the code
reads: every ``KDSTREAM_*`` variable is a Settings field with a valid value, every command parses
with the real ``kdstream`` parser, the Kafka image is the release local_cluster pins, the
processor can be scaled, the Dockerfile installs every package folder as a non-root user.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import inspect
import re
import tomllib
import urllib.parse
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdstream.cli import build_parser
from kdstream.local_cluster import KAFKA_VERSION
from kdstream.settings import CONFIG_ENV, ENV_PREFIX, Settings
from kdstream.stream import RedisStore

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

KDSTREAM_SERVICES = ("topics", "processor", "teacher", "api")
SERVICES = frozenset({"kafka", "redis", *KDSTREAM_SERVICES})
FIELDS = frozenset(f.name for f in fields(Settings))


# ---------------------------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict), "docker-compose.yml must be a mapping"
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as name -> text (compose accepts a mapping or KEY=VALUE list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw]
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _parse(command: list[str]) -> argparse.Namespace:
    """``kdstream <command>`` through the real parser; argparse's exit becomes a failure."""
    try:
        return build_parser().parse_args(command)
    except SystemExit as exc:  # argparse prints its reason on stderr
        pytest.fail(f"`kdstream {' '.join(command)}` is rejected by the CLI parser (exit {exc})")


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), (
        f"command must be an exec-form list of strings, got {command!r}"
    )
    return command


def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _conditions(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must be a mapping with a condition per service"
    return {name: spec.get("condition", "") for name, spec in deps.items()}


# ---------------------------------------------------------------------------------- compose


def test_compose_parses_and_has_the_services() -> None:
    services = _services()
    assert set(services) == SERVICES
    for name in KDSTREAM_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    # one image for every kdstream service
    assert len({services[n]["image"] for n in KDSTREAM_SERVICES}) == 1


def test_every_kdstream_env_var_is_a_settings_field_with_a_valid_value() -> None:
    for name, service in _services().items():
        env = _env(service)
        for var in env:
            if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
                continue
            field = var.removeprefix(ENV_PREFIX).lower()
            assert field in FIELDS, f"{name}: {var} is not read by Settings (no field {field!r})"
        if any(v.startswith(ENV_PREFIX) for v in env):
            # the values must load: same parsing and validation the service will run
            Settings.load(env={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})


def test_dockerfile_env_vars_are_settings_fields() -> None:
    for word, rest in _instructions(_dockerfile()):
        if word != "ENV":
            continue
        for var in re.findall(r"\b(KDSTREAM_[A-Z_]+)=", rest):
            assert var.removeprefix(ENV_PREFIX).lower() in FIELDS, f"Dockerfile sets {var}"


@pytest.mark.parametrize("name", KDSTREAM_SERVICES)
def test_commands_are_registered_subcommands_with_accepted_flags(name: str) -> None:
    command = _command(_services()[name])
    args = _parse(command)
    assert args.command == command[0]
    assert callable(args.func)


def test_kdstream_services_use_settings_sources_the_cli_reads() -> None:
    services = _services()
    for name in ("topics", "processor", "teacher"):
        env = _env(services[name])
        settings = Settings.load(env=env)
        assert settings.broker_kind() == "kafka", f"{name}: KDSTREAM_BROKER must be kafka://"
    assert Settings.load(env=_env(services["processor"])).store_kind() == "redis"


def test_kafka_image_is_the_pinned_release_in_kraft_mode() -> None:
    kafka = _services()["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag == KAFKA_VERSION
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    # CLUSTER_ID is a base64url UUID (16 bytes), as `kafka-storage format` requires
    try:
        raw = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")
    except binascii.Error:
        pytest.fail(f"CLUSTER_ID {env['CLUSTER_ID']!r} is not base64url")
    assert len(raw) == 16 and len(env["CLUSTER_ID"]) == 22
    assert "healthcheck" in kafka


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for entry in value.split(","):
        m = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", entry.strip())
        assert m is not None, f"bad listener {entry!r}"
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


def test_kafka_listeners_serve_the_broker_url_the_services_use() -> None:
    services = _services()
    env = _env(services["kafka"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) == set(protocols)
    assert controller in listeners and controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name}: advertised port differs from listener"
    voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voter == f"{env['KAFKA_NODE_ID']}@kafka:{listeners[controller][1]}"
    # every kdstream service's broker is an advertised listener reachable on the network
    internal = {f"{h}:{p}" for h, p in advertised.values()}
    for name in ("topics", "processor", "teacher"):
        bootstrap = Settings.load(env=_env(services[name])).kafka_bootstrap()
        for host_port in bootstrap:
            assert host_port in internal, f"{name}: {host_port} is not advertised by kafka"
            assert host_port.split(":")[0] in services, f"{name}: {host_port} is no service"


def test_redis_service_and_store_urls() -> None:
    services = _services()
    redis = services["redis"]
    assert redis["image"].split(":")[0] == "redis"
    assert "healthcheck" in redis
    store = Settings.load(env=_env(services["processor"])).store
    host = urllib.parse.urlsplit(store).hostname
    assert host == "redis"
    # `kdstream api` reads the store from --store, not from Settings: it must be the same one
    args = _parse(_command(services["api"]))
    assert args.store == store


def test_api_namespace_matches_the_processors() -> None:
    """The api opens the store without a namespace option: the processors must use the one
    RedisStore defaults to, or the api would read empty keys."""
    services = _services()
    api_flags = {a for action in _api_parser()._actions for a in action.option_strings}
    namespace = Settings.load(env=_env(services["processor"])).namespace
    if "--namespace" not in api_flags:
        default = inspect.signature(RedisStore.__init__).parameters["namespace"].default
        assert namespace == default


def _api_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["api"]
    raise AssertionError("no sub-commands")


def test_api_store_url_opens_a_redis_store() -> None:
    from kdstream.cli_serve import _open_store

    store = _open_store(_parse(_command(_services()["api"])).store)  # connects lazily
    assert isinstance(store, RedisStore)


def test_api_listens_on_the_published_port() -> None:
    api = _services()["api"]
    args = _parse(_command(api))
    assert args.host == "0.0.0.0", "the api must bind all interfaces inside its container"
    published = [str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])]
    assert str(args.port) in published
    assert "healthcheck" in api


def test_processor_is_scalable() -> None:
    processor = _services()["processor"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in processor, f"processor has {key}: `--scale processor=N` would clash"
    # replicas share the work through one consumer group
    assert Settings.load(env=_env(processor)).partitions >= 2


def test_depends_on_conditions() -> None:
    services = _services()
    expected = {
        "topics": {"kafka": "service_healthy"},
        "processor": {
            "kafka": "service_healthy",
            "redis": "service_healthy",
            "topics": "service_completed_successfully",
        },
        "teacher": {"kafka": "service_healthy", "topics": "service_completed_successfully"},
        "api": {"redis": "service_healthy"},
    }
    for name, conditions in expected.items():
        assert _conditions(services[name]) == conditions, name
    for name, service in services.items():
        for dep, condition in _conditions(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name}: {dep} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: unexpected condition {condition!r}")


def test_teacher_state_dir_is_on_a_volume() -> None:
    compose = _compose()
    teacher = compose["services"]["teacher"]
    state_dir = Settings.load(env=_env(teacher)).state_dir
    mounts = [str(v).split(":")[:2] for v in teacher.get("volumes", [])]
    assert any(
        Path(state_dir).is_relative_to(target) and source in (compose.get("volumes") or {})
        for source, target in mounts
    ), f"{state_dir} is not inside a named volume"


def test_named_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


# ---------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_user_and_entrypoint() -> None:
    instructions = _instructions(_dockerfile())
    args = dict(
        rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest
    )
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    assert resolved and all(b == "python:3.11-slim" for b in resolved)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    entrypoints = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoints[-1] == '["kdstream"]'


def test_dockerfile_installs_every_package_folder() -> None:
    text = _dockerfile()
    instructions = _instructions(text)
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "the package itself must be pip-installed"
    assert "download.pytorch.org/whl/cpu" in text, "torch should be the CPU build"
    with (ROOT / "pyproject.toml").open("rb") as fh:
        pyproject = tomllib.load(fh)
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {
        rest.split()[0].rstrip("/")
        for word, rest in instructions
        if word == "COPY" and not rest.startswith("--from")
    }
    copied_files = {part for word, rest in instructions if word == "COPY"
                    for part in rest.split()[:-1]}
    assert folders <= copied, f"Dockerfile does not copy {sorted(folders - copied)}"
    readme = pyproject["project"].get("readme")
    assert {"pyproject.toml", readme} <= copied_files
    # the student's compiled step: its build script, and a compiler in the build stage
    assert {"setup.py", "MANIFEST.in"} <= copied_files
    assert re.search(r"apt-get install .*\bgcc\b", runs), "the build stage needs a C compiler"
    assert "import kdstream.student._kernel" in runs, "the build must check the step compiled"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    with (ROOT / "pyproject.toml").open("rb") as fh:
        pyproject = tomllib.load(fh)
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert not needed & ignored, f".dockerignore drops {sorted(needed & ignored)}"
