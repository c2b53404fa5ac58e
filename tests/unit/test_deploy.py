"""The deployment files agree with the code: docker-compose.yml, deploy/k8s/, deploy/Dockerfile and
deploy/example.env name only commands the CLI has, stages that exist and settings that exist, with
values the settings accept; probes point where the stages serve them; the channels' credentials are
provided where the channels file says."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import SecretStr

from ordersync.channels import ChannelsFile, SecretRef, load_channels
from ordersync.cli import app
from ordersync.kafka.admin import aiokafka_client_config, kafka_client_config
from ordersync.kafka.faust_app import broker_credentials
from ordersync.ops.envdoc import (
    REGENERATE_COMMAND,
    env_settings,
    is_setting_env_name,
    render_env_file,
    render_value,
    report_env_problems,
    unknown_env_names,
)
from ordersync.pipeline.stages import STAGES
from ordersync.redis_client import redis_client, redis_tls_options
from ordersync.settings import KafkaSettings, RedisSettings, Settings
from ordersync.simulator.scenario import load_scenario
from ordersync.state.listings import parse_listings_csv

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
EXAMPLE_ENV = ROOT / "deploy" / "example.env"
COMPOSE_ENV_FILES = (ROOT / "deploy" / "compose.env", ROOT / "deploy" / "demo" / "ordersync.env")
#: Stages driven by timers per channel, not partitions: one worker per channel at a time holds a lease in
#: Redis, and further replicas stand by (docs/deploy.md).
LEASED_STAGES = {"order-download", "inventory"}
#: Long-running compose services without an HTTP endpoint to check (a crash ends the process instead).
NO_HEALTH_ENDPOINT = {"backoffice"}


# --- loading ---------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _ordersync_services() -> dict[str, dict[str, Any]]:
    """The compose services running the ordersync image (their command is an ordersync command)."""
    return {name: svc for name, svc in _services().items() if "ordersync" in str(svc.get("image", ""))}


def _k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _k8s_documents() if doc.get("kind") == kind]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _k8s("Deployment") + _k8s("Job"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _k8s_env() -> dict[str, str]:
    """What envFrom gives every ordersync pod: the settings ConfigMap and the credentials Secret."""
    env: dict[str, str] = {}
    for doc in _k8s("ConfigMap") + _k8s("Secret"):
        data = doc.get("data") or doc.get("stringData") or {}
        if doc["metadata"]["name"] in ("ordersync-settings", "ordersync-credentials"):
            env.update({key: str(value) for key, value in data.items()})
    return env


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def _settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings built from exactly ``env`` (plus the session's empty dev-state folder)."""
    for name in list(os.environ):
        if name.startswith("ORDERSYNC_") and name != "ORDERSYNC_STATE_DIR":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- the CLI's command tree ------------------------------------------------------------------------


#: click's UsageError, whichever click typer uses (recent typer versions vendor their own).
USAGE_ERROR: type[Exception] = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def _resolve(args: list[str]) -> Any:
    """The ordersync command ``args`` invokes; click refuses unknown commands, options and arguments."""
    command: Any = typer.main.get_command(app)
    path = ["ordersync"]
    rest = list(args)
    while hasattr(command, "list_commands"):  # a group: the next word names a subcommand
        assert rest, f"`{' '.join(path)}` needs a subcommand"
        sub = command.get_command(typer.Context(command, info_name=path[-1]), rest[0])
        assert sub is not None, f"`{' '.join(path)}` has no command {rest[0]!r}"
        path.append(rest.pop(0))
        command = sub
    try:
        command.make_context(" ".join(path), list(rest))  # click consumes the list it parses
    except USAGE_ERROR as exc:
        pytest.fail(f"`{' '.join(path)} {shlex.join(rest)}`: {exc}")
    if path[1:2] == ["run"]:
        assert rest[0] in STAGES, f"`ordersync run {rest[0]}`: no such stage (stages: {', '.join(STAGES)})"
    return command


def _commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in _ordersync_services().items():
        yield f"docker-compose.yml {name}", [str(arg) for arg in service["command"]]
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            assert container["image"] == "ordersync", f"{name}: every ordersync container uses the one image"
            yield f"deploy/k8s {name}", [str(arg) for arg in container["args"]]


def test_every_service_command_is_a_real_cli_command() -> None:
    commands = list(_commands())
    assert len(commands) >= 2 * len(STAGES)
    for where, args in commands:
        assert args, f"{where}: no command"
        try:
            _resolve(args)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc


def test_a_wrong_command_or_option_is_caught() -> None:
    """The check above can fail: unknown commands, options and stages are refused."""
    wrong_commands = (
        ["sim", "serve", "--hots", "0.0.0.0"],
        ["topics", "make"],
        ["run", "item-fetcher"],
        ["listings", "import", "file.csv"],  # --channel is required
        ["sim"],
    )
    for wrong in wrong_commands:
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            _resolve(wrong)
    assert _resolve(["sim", "serve", "--host", "0.0.0.0"]).name == "serve"


def test_every_stage_runs_in_compose_and_in_kubernetes() -> None:
    compose_stages = {
        svc["command"][1] for svc in _ordersync_services().values() if svc["command"][0] == "run"
    }
    k8s_stages = {c["args"][1] for _, pod in _pod_specs() for c in pod["containers"] if c["args"][0] == "run"}
    assert compose_stages == set(STAGES)
    assert k8s_stages == set(STAGES)
    assert "status-projection" in STAGES, "the status projection is a stage (ordersync run status-projection)"


# --- settings: names and values --------------------------------------------------------------------


def _compose_env_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for name, service in _ordersync_services().items():
        for variable in service.get("environment") or {}:
            names[variable] = f"docker-compose.yml {name}"
    for path in COMPOSE_ENV_FILES:
        names.update(dict.fromkeys(_env_file(path), str(path.relative_to(ROOT))))
    return names


def test_every_ordersync_variable_is_a_real_setting() -> None:
    used = _compose_env_names()
    used.update(dict.fromkeys(_k8s_env(), "deploy/k8s"))
    used.update(
        dict.fromkeys(
            re.findall(r"^# (ORDERSYNC_\w+)=", EXAMPLE_ENV.read_text(), re.MULTILINE), "example.env"
        )
    )
    used.update(dict.fromkeys(re.findall(r"\b(ORDERSYNC_[A-Z0-9_]+)=", DOCKERFILE.read_text()), "Dockerfile"))
    ordersync_vars = {name: where for name, where in used.items() if name.startswith("ORDERSYNC_")}
    assert len(ordersync_vars) > 20
    wrong = {f"{name} ({where})" for name, where in ordersync_vars.items() if not is_setting_env_name(name)}
    assert not wrong, f"not settings (pydantic-settings would ignore them): {sorted(wrong)}"


def test_the_compose_settings_are_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_file(COMPOSE_ENV_FILES[0])
    stage_env = _services()["item-fetch"]["environment"]
    settings = _settings_from(monkeypatch, {**env, **{k: str(v) for k, v in stage_env.items()}})
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.redis.url.startswith("redis://redis:")
    assert settings.stage.web_port == 9100
    demo = _settings_from(monkeypatch, {**env, **_env_file(COMPOSE_ENV_FILES[1])})
    assert demo.amazon.endpoint == "http://simulator:8100"


def test_the_kubernetes_settings_are_valid_and_secure(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(monkeypatch, _k8s_env())
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
    assert settings.kafka.sasl_password is not None
    assert settings.redis.url.startswith("rediss://")
    assert settings.redis.password is not None
    assert settings.stage.web_port == 9100
    assert settings.stage.replication_factor >= 3


def test_secrets_are_in_the_secret_not_the_configmap() -> None:
    secret_names = {s.name for s in env_settings() if s.secret}
    for configmap in _k8s("ConfigMap"):
        leaked = secret_names & set(configmap.get("data") or {})
        assert not leaked, f"ConfigMap {configmap['metadata']['name']} holds secrets: {leaked}"


# --- example.env -----------------------------------------------------------------------------------


def test_example_env_is_what_the_generator_prints() -> None:
    assert EXAMPLE_ENV.read_text() == render_env_file(), (
        f"deploy/example.env is out of date with ordersync/settings.py: run `{REGENERATE_COMMAND}`"
    )


def test_example_env_defaults_read_back_as_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting any line of example.env leaves the setting at its default (quoting included)."""
    env = {}
    for setting in env_settings():
        if setting.default:
            value = setting.default
            if value.startswith("'") and value.endswith("'"):
                value = value[1:-1]  # what a shell or Compose makes of a single-quoted value
            env[setting.name] = value
    assert "ORDERSYNC_RATELIMIT__LANE_RESERVES" in env
    assert _settings_from(monkeypatch, env).model_dump() == _settings_from(monkeypatch, {}).model_dump()


def test_example_env_shows_every_setting_and_no_secret_value() -> None:
    text = EXAMPLE_ENV.read_text()
    for setting in env_settings():
        assert f"# {setting.name}={setting.default}\n" in text
        if setting.secret:
            assert setting.default == ""
    assert {"ORDERSYNC_KAFKA__SSL_CERTFILE", "ORDERSYNC_REDIS__SSL_CA_CERTS"} <= {
        s.name for s in env_settings()
    }


def test_setting_names_typos_and_mapping_entries() -> None:
    assert is_setting_env_name("ORDERSYNC_KAFKA__BOOTSTRAP")
    assert is_setting_env_name("ordersync_kafka__bootstrap")
    assert is_setting_env_name("ORDERSYNC_RATELIMIT__LANE_RESERVES__PACKING")
    assert not is_setting_env_name("ORDERSYNC_KAFKA__BOOTSTRAPS")
    assert not is_setting_env_name("ORDERSYNC_KAFKA")
    assert unknown_env_names(["ORDERSYNC_KAFKA__BOOTSTRAPS", "ORDERSYNC_STATE_DIR", "HOME"]) == {
        "ORDERSYNC_KAFKA__BOOTSTRAPS": "ORDERSYNC_KAFKA__BOOTSTRAP"
    }


def test_settings_check_names_typos_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_REDIS__PASWORD", "hunter2")
    monkeypatch.setenv("ORDERSYNC_KAFKA__SECURITY_PROTOCOL", "TLS")
    problems = report_env_problems(os.environ)
    assert any("ORDERSYNC_REDIS__PASWORD" in p and "ORDERSYNC_REDIS__PASSWORD?" in p for p in problems)
    assert any(p.startswith("ORDERSYNC_KAFKA__SECURITY_PROTOCOL:") for p in problems)
    assert not any("hunter2" in p for p in problems), "a value (maybe a secret) reached the report"


def test_env_values_are_quoted_for_shells_and_compose() -> None:
    assert render_value(None) == ""
    assert render_value(3600.0) == "3600"
    assert render_value(0.05) == "0.05"
    assert render_value(True) == "true"
    assert render_value({"a": 1}) == """'{"a":1}'"""
    assert render_value("it's") == "'it'\"'\"'s'"
    assert render_value(Path("channels.yaml")) == "channels.yaml"


# --- probes and health ----------------------------------------------------------------------------


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(str(part) for part in service["healthcheck"]["test"])
    found = re.search(r"http://[^'\" ]+", test)
    assert found, f"healthcheck {test!r} names no URL"
    return found.group(0)


def test_compose_healthchecks_use_the_port_the_env_sets() -> None:
    for name, service in _ordersync_services().items():
        command = service["command"]
        environment = service.get("environment") or {}
        if command[0] == "run":
            url = urlsplit(_healthcheck_url(service))
            assert url.port == int(environment["ORDERSYNC_STAGE__WEB_PORT"]), name
            assert url.path in ("/healthz", "/readyz"), name
        elif command[0] == "dashboard":
            url = urlsplit(_healthcheck_url(service))
            assert url.port == int(environment["ORDERSYNC_DASHBOARD__PORT"])
            assert url.path in ("/healthz", "/readyz")
            assert environment["ORDERSYNC_DASHBOARD__HOST"] == "0.0.0.0"
        elif command[:2] == ["sim", "serve"]:
            assert urlsplit(_healthcheck_url(service)).port == int(command[command.index("--port") + 1])


def test_kubernetes_probes_point_at_healthz_and_readyz_on_the_web_port() -> None:
    env = _k8s_env()
    ports_by_command = {
        "run": int(env["ORDERSYNC_STAGE__WEB_PORT"]),
        "dashboard": int(env["ORDERSYNC_DASHBOARD__PORT"]),
    }
    for deployment in _k8s("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            expected = ports_by_command[container["args"][0]]
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = container[probe]["httpGet"]
                assert get["path"] == path, f"{deployment['metadata']['name']} {probe}"
                port = ports.get(get["port"], get["port"])
                assert port == expected, (
                    f"{deployment['metadata']['name']} {probe} on {port}, serves {expected}"
                )


# --- Kubernetes workloads ------------------------------------------------------------------------


def _dockerfile_final_stage() -> str:
    return DOCKERFILE.read_text().split("\nFROM ")[-1]


def test_kubernetes_workloads_are_non_root_with_requests_and_replicas() -> None:
    env = _k8s_env()
    partitions = int(env["ORDERSYNC_STAGE__PARTITIONS"])
    image_user = int(re.search(r"^USER (\d+)", _dockerfile_final_stage(), re.MULTILINE).group(1))  # type: ignore[union-attr]
    workdir = re.search(r"^WORKDIR (\S+)", _dockerfile_final_stage(), re.MULTILINE).group(1)  # type: ignore[union-attr]
    for name, pod in _pod_specs():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == image_user != 0, name
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            assert requests.get("cpu"), f"{name}: resources.requests.cpu"
            assert requests.get("memory"), f"{name}: resources.requests.memory"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            if context.get("readOnlyRootFilesystem") and container["args"][0] != "topics":
                mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
                assert workdir in mounts, (
                    f"{name}: faust writes its data folder in {workdir}: mount an emptyDir"
                )
    for deployment in _k8s("Deployment"):
        name = deployment["metadata"]["name"]
        replicas = deployment["spec"]["replicas"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert replicas >= 1, name
        if args[0] == "run" and args[1] in LEASED_STAGES:
            assert replicas <= 3, f"{name}: one active worker per channel; a standby or two is enough"
        elif args[0] == "run":
            assert replicas <= partitions, f"{name}: {replicas} replicas for {partitions} partitions"


def test_channel_credentials_are_provided_where_the_channels_file_says() -> None:
    channels_map = next(cm for cm in _k8s("ConfigMap") if cm["metadata"]["name"] == "ordersync-channels")
    channels = ChannelsFile.model_validate(yaml.safe_load(channels_map["data"]["channels.yaml"]))
    secrets = {s["metadata"]["name"]: set(s.get("stringData") or s.get("data") or {}) for s in _k8s("Secret")}
    for name, pod in _pod_specs():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            if container["args"][0] not in ("run", "dashboard"):
                continue
            env_keys: set[str] = set()
            for source in container["envFrom"]:
                if "secretRef" in source:
                    env_keys |= secrets[source["secretRef"]["name"]]
            files: set[str] = set()
            channels_mounted = False
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                if "secret" in volume:
                    files |= {
                        f"{mount['mountPath']}/{key}" for key in secrets[volume["secret"]["secretName"]]
                    }
                if volume.get("configMap", {}).get("name") == "ordersync-channels":
                    channels_mounted = (
                        f"{mount['mountPath']}/channels.yaml" == _k8s_env()["ORDERSYNC_CHANNELS_FILE"]
                    )
            assert channels_mounted, f"{name}: the channels ConfigMap is not at ORDERSYNC_CHANNELS_FILE"
            for channel in channels.channels:
                secret_refs = [(f, r) for f, r in channel.credentials if f != "client_secret_expires_at"]
                for field, ref in secret_refs:
                    assert isinstance(ref, SecretRef)
                    assert ref.value is None, f"{channel.name} {field}: a secret inline in a ConfigMap"
                    if ref.env is not None:
                        assert ref.env in env_keys, (
                            f"{name}: {ref.env} ({channel.name} {field}) not in a Secret"
                        )
                    if ref.file is not None:
                        assert str(ref.file) in files, (
                            f"{name}: {ref.file} ({channel.name} {field}) not mounted"
                        )


# --- docker-compose.yml ----------------------------------------------------------------------------


def test_compose_services_have_healthchecks_and_restart_policies() -> None:
    for name, service in _services().items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: restart policy"
        one_shot = service["restart"] == "on-failure"
        if not one_shot and name not in NO_HEALTH_ENDPOINT:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    stage_services = [s for s in _ordersync_services().values() if s["command"][0] == "run"]
    for service in stage_services:
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_runs_apache_kafka_in_kraft_mode_and_redis_with_aof() -> None:
    services = _services()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert not any("ZOOKEEPER" in key for key in env), "KRaft: no ZooKeeper"
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false", "topics come from the catalogue only"
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert _env_file(COMPOSE_ENV_FILES[0])["ORDERSYNC_KAFKA__BOOTSTRAP"] == "kafka:9092"
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert any(str(volume).endswith(":/data") for volume in redis["volumes"]), (
        "the AOF must outlive the container"
    )


def test_compose_demo_profile_adds_the_simulator_and_the_back_office() -> None:
    services = _services()
    demo = {name for name, service in services.items() if "demo" in service.get("profiles", [])}
    assert {"simulator", "backoffice"} <= demo
    assert not {name for name, svc in services.items() if svc.get("profiles")} - demo
    demo_env = _env_file(COMPOSE_ENV_FILES[1])
    sim = services["simulator"]["command"]
    assert demo_env["ORDERSYNC_AMAZON__ENDPOINT"] == f"http://simulator:{sim[sim.index('--port') + 1]}"
    scenario = load_scenario(sim[sim.index("--scenario") + 1])
    assert float(demo_env["ORDERSYNC_AMAZON__TIME_SCALE"]) == scenario.time_scale
    # The demo's channels and listings are the scenario's sellers and catalogue.
    mount = next(v for v in services["simulator"]["volumes"] if v.endswith(":/etc/ordersync-demo:ro"))
    demo_dir = ROOT / mount.split(":")[0]
    assert demo_env["ORDERSYNC_CHANNELS_FILE"] == "/etc/ordersync-demo/channels.yaml"
    channels = load_channels(demo_dir / "channels.yaml")
    assert {c.seller_id for c in channels.channels} == {s.seller_id for s in scenario.sellers}
    for name in ("demo-listings-us", "demo-listings-eu", "demo-listings-in"):
        command = services[name]["command"]
        channel = channels.by_name(command[command.index("--channel") + 1])
        csv_path = demo_dir / Path(command[2]).relative_to("/etc/ordersync-demo")
        listed = {row.seller_sku for row in parse_listings_csv(csv_path.read_text()).rows}
        seller = next(s for s in scenario.sellers if s.seller_id == channel.seller_id)
        assert listed == {product.sku for product in seller.catalogue}


# --- the image -------------------------------------------------------------------------------------


def test_the_image_is_multi_stage_non_root_and_holds_every_package_folder() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    final = _dockerfile_final_stage()
    assert re.search(r"^USER [1-9]\d*", final, re.MULTILINE), (
        "the runtime stage runs as a numeric non-root uid"
    )
    assert 'ENTRYPOINT ["ordersync"]' in final
    assert "slim" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {folder.split("/")[0] for folder in pyproject["tool"]["setuptools"]["package-dir"].values()}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for folder in folders:
        assert re.search(rf"^COPY {folder}/ {folder}/$", text, re.MULTILINE), f"the image misses {folder}/"
        assert f"!{folder}/" in ignore, f".dockerignore leaves {folder}/ out of the build context"


def test_every_data_file_of_the_packages_goes_into_the_wheel() -> None:
    """Files that are not Python must match a package-data glob, or the image lacks them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs: dict[str, str] = setuptools["package-dir"]
    package_data: dict[str, list[str]] = setuptools["package-data"]
    missing = []
    for package in setuptools["packages"]:
        top = next(
            p
            for p in sorted(package_dirs, key=len, reverse=True)
            if package == p or package.startswith(p + ".")
        )
        folder = (
            ROOT
            / package_dirs[top]
            / Path(*package[len(top) :].lstrip(".").split(".") if package != top else ())
        )
        for path in folder.rglob("*"):
            relative = path.relative_to(folder)
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in relative.parts:
                continue
            if relative.parts[0] in {
                p.split(".")[-1] for p in setuptools["packages"] if p.startswith(package + ".")
            }:
                continue  # a subpackage's own file: checked with that package
            if not any(fnmatch.fnmatch(str(relative), glob) for glob in package_data.get(package, [])):
                missing.append(f"{package}: {relative}")
    assert not missing, f"not in any package-data glob of pyproject.toml: {missing}"


# --- security settings reach every client ----------------------------------------------------------


@pytest.fixture
def client_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), standing in for a CA bundle and a client cert."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a test certificate")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    command = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ordersync-test"]
    subprocess.run(
        [openssl, *command, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_kafka_sasl_ssl_and_mutual_tls_reach_every_kafka_client(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    kafka = KafkaSettings(
        bootstrap="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="ordersync",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    config = kafka_client_config(kafka)
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("ordersync", "s3cret")
    assert (config["ssl_cafile"], config["ssl_certfile"], config["ssl_keyfile"]) == (
        str(cert),
        str(cert),
        str(key),
    )
    aio = aiokafka_client_config(kafka)
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    assert aio["ssl_context"].get_ca_certs(), "the CA bundle is loaded"
    assert not {"ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"} & set(aio)
    credentials = broker_credentials(kafka)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context.get_ca_certs()
    # PLAINTEXT ignores the TLS files: no client is handed certificates it would not use.
    plain = kafka_client_config(kafka.model_copy(update={"security_protocol": "PLAINTEXT"}))
    assert not {"ssl_cafile", "ssl_certfile", "ssl_keyfile"} & set(plain)


def test_a_wrong_client_key_fails_at_start_not_at_the_first_record(client_cert: tuple[Path, Path]) -> None:
    cert, _ = client_cert
    kafka = KafkaSettings(security_protocol="SSL", ssl_certfile=cert, ssl_keyfile=cert)  # a cert is no key
    with pytest.raises(ssl.SSLError):
        broker_credentials(kafka)


def test_redis_tls_options_apply_to_rediss_urls_only(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    tls = RedisSettings(
        url="rediss://cache:6380/0",
        password=SecretStr("pw"),
        ssl_ca_certs=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    assert redis_tls_options(tls) == {
        "ssl_ca_certs": str(cert),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    client = redis_client(tls)  # builds the pool; connects only on the first command
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["password"]) == (str(cert), "pw")
    plain = tls.model_copy(update={"url": "redis://cache:6379/0"})
    assert redis_tls_options(plain) == {}
    assert "ssl_ca_certs" not in redis_client(plain).connection_pool.connection_kwargs


def test_a_redis_url_cannot_switch_certificate_checks_off() -> None:
    # redis-py would let the URL's query override the TLS settings.
    for query in ("ssl_cert_reqs=none", "ssl_check_hostname=false", "SSL_CA_CERTS=/tmp/x"):
        with pytest.raises(ValueError, match="carries TLS options"):
            RedisSettings(url=f"rediss://cache:6380/0?{query}")
    assert RedisSettings(url="rediss://cache:6380/0?health_check_interval=5").url.endswith("=5")
