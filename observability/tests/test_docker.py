"""The Docker files, checked with what runs without a Docker engine.

The compose file is parsed and held to plan Step 7; the entrypoint runs under sh against a
real database (and a dead one); the Dockerfile is read for the properties Step 7 asks for.
"""

import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
SPECIAL_PASSWORD = "p@ss/w:rd#1?%x"


def read_dotenv(text: str) -> dict:
    """KEY=VALUE lines as compose reads a .env (comments, blank lines, '...' and "..." quotes)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""
    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        empty = value is None or (op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if empty else value
        if op in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""
    return re.sub(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, text)


def yaml_load(text: str):
    import yaml

    return yaml.safe_load(text)


class ComposeFileTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        compose = ROOT / "docker" / "docker-compose.yml"
        try:
            import yaml  # a dev requirement: absent from the production image
        except ImportError:
            raise unittest.SkipTest("needs PyYAML (requirements-dev.txt), not installed in the image") from None
        if not compose.exists():
            raise unittest.SkipTest("docker/docker-compose.yml is not in the image (.dockerignore)")
        cls.compose = yaml.safe_load(compose.read_text())
        cls.services = cls.compose["services"]

    def test_it_has_a_db_and_a_web_service(self):
        self.assertEqual(set(self.services), {"db", "web"})

    def test_db_is_a_pinned_timescaledb_with_a_volume_and_a_healthcheck(self):
        db = self.services["db"]
        self.assertRegex(db["image"], r"^timescale/timescaledb:\d+\.\d+\.\d+-pg15$")
        self.assertTrue(any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"]))
        self.assertIn("pg_isready", " ".join(db["healthcheck"]["test"]))
        self.assertIn(db["volumes"][0].split(":")[0], self.compose["volumes"])

    def test_web_builds_the_dockerfile_and_waits_for_a_healthy_db(self):
        web = self.services["web"]
        self.assertTrue((ROOT / "docker" / web["build"]["context"] / web["build"]["dockerfile"]).is_file())
        self.assertEqual(web["depends_on"]["db"]["condition"], "service_healthy")
        self.assertIn("docker/healthcheck.py", web["healthcheck"]["test"])
        self.assertIn('"/api/health/"', (ROOT / "docker" / "healthcheck.py").read_text())
        env = web["environment"]
        self.assertIn("@db:5432/", env["DATABASE_URL"])
        self.assertEqual(env["APM_TIMESCALE"], "require")
        for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS"):
            self.assertIn(name, env)

    def test_the_secrets_have_no_default_so_compose_refuses_to_start_without_them(self):
        text = (ROOT / "docker" / "docker-compose.yml").read_text()
        for name in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
            self.assertIn(f"${{{name}:?", text)
            self.assertNotRegex(text, rf"\$\{{{name}(:?-|\}})", f"{name} must not fall back to a default")
        example = read_dotenv((ROOT / ".env.example").read_text())
        with self.assertRaises(MissingVariable) as refused:
            interpolate(text, example)  # .env copied from .env.example and not edited yet
        self.assertIn("set ", str(refused.exception))

    def test_a_simulated_env_reaches_the_settings_with_any_password(self):
        """.env as the README says (copied from .env.example, two values set), resolved as compose would."""
        dotenv = read_dotenv((ROOT / ".env.example").read_text())
        dotenv.update(DJANGO_SECRET_KEY="k" * 50, POSTGRES_PASSWORD=SPECIAL_PASSWORD)
        compose = yaml_load(interpolate((ROOT / "docker" / "docker-compose.yml").read_text(), dotenv))
        web = compose["services"]["web"]
        self.assertEqual(web["ports"], ["127.0.0.1:8000:8000"], "loopback unless WEB_BIND opts in")
        opened = yaml_load(interpolate((ROOT / "docker" / "docker-compose.yml").read_text(),
                                       {**dotenv, "WEB_BIND": "0.0.0.0"}))
        self.assertEqual(opened["services"]["web"]["ports"], ["0.0.0.0:8000:8000"])
        self.assertEqual(compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"], SPECIAL_PASSWORD)
        # The container's environment: the image's ENV, then env_file (.env), then `environment`.
        # The image's DJANGO_STATIC_ROOT is overridden by the .env's empty one, which means unset:
        # the default, <code>/staticfiles (/app/staticfiles in the image), not the code directory.
        container = {"DJANGO_STATIC_ROOT": "/app/staticfiles", **dotenv,
                     **{k: str(v) for k, v in web["environment"].items()}}
        code = ("import json, django; django.setup(); from django.conf import settings as s; "
                "d = s.DATABASES['default']; print(json.dumps([d['USER'], d['PASSWORD'], d['HOST'], d['PORT'], "
                "d['NAME'], s.SECRET_KEY, s.DEBUG, str(s.STATIC_ROOT), s.ALLOWED_HOSTS]))")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                env={"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "apm_platform.settings",
                                     **container})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), ["apm", SPECIAL_PASSWORD, "db", 5432, "apm", "k" * 50, False,
                                                     str(ROOT / "staticfiles"), ["localhost", "127.0.0.1"]])

    def test_the_make_targets_and_docs_pass_the_root_env_file_to_compose(self):
        self.assertIn("docker compose --env-file .env -f docker/docker-compose.yml", (ROOT / "Makefile").read_text())
        for doc in ("README.md", "docs/DEPLOY.md", "docs/OPERATIONS.md"):
            for line in re.findall(r"docker compose [^\n]*", (ROOT / doc).read_text()):
                if "-f docker/docker-compose.yml" in line:
                    self.assertIn("--env-file .env", line, f"{doc}: {line}")

    def test_the_healthcheck_is_the_script_that_sends_an_allowed_host(self):
        self.assertEqual(self.services["web"]["healthcheck"]["test"], ["CMD", "python", "docker/healthcheck.py"])
        self.assertTrue((ROOT / "docker" / "healthcheck.py").is_file())

    def test_every_variable_the_stack_reads_is_in_env_example(self):
        example = (ROOT / ".env.example").read_text()
        used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker" / "docker-compose.yml").read_text()))
        settings_vars = set(re.findall(r'env_\w+\("(\w+)"', (ROOT / "apm_platform" / "settings.py").read_text()))
        self.assertIn("APM_INGEST_RATE_LIMIT", settings_vars)
        gunicorn_vars = set(re.findall(r'"(GUNICORN_\w+|PORT)"', (ROOT / "gunicorn.conf.py").read_text()))
        for name in sorted(used | settings_vars | gunicorn_vars | {"DB_WAIT_TIMEOUT"}):
            self.assertRegex(example, rf"(?m)^#? ?{name}=", name)


class DockerfileTests(SimpleTestCase):
    def test_it_is_multi_stage_non_root_and_runs_gunicorn_through_the_entrypoint(self):
        text = (ROOT / "Dockerfile").read_text()
        self.assertGreaterEqual(len(re.findall(r"(?m)^FROM ", text)), 2)
        self.assertRegex(text, r"(?m)^USER app$")
        self.assertIn("collectstatic --noinput", text)
        self.assertIn('ENTRYPOINT ["/app/docker/entrypoint.sh"]', text)
        self.assertNotRegex(text, r"(?m)^CMD ")  # the entrypoint's default command is gunicorn
        for line in re.findall(r"(?m)^COPY .*", text):
            source = line.split()[-2]
            if not source.startswith("--") and source != ".":
                self.assertTrue((ROOT / source).exists() or "/opt/venv" in line, line)

    def test_dockerignore_keeps_secrets_databases_and_local_state_out_of_the_image(self):
        patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]

        def ignored(path):  # Docker's rule: the last matching pattern wins; "!" re-includes
            verdict = False
            for pattern in patterns:
                negate = pattern.startswith("!")
                if fnmatch.fnmatch(path, pattern.lstrip("!")):
                    verdict = not negate
            return verdict

        for path in (".git", ".venv", ".env", ".env.local", ".env.production", ".local-credentials.json",
                     "db.sqlite3", "db.sqlite3-journal", "apm.sqlite3", "staticfiles", "node_modules", ".cache"):
            self.assertTrue(ignored(path), path)
        for path in (".env.example", "manage.py", "observability", "docker/entrypoint.sh", "docker/healthcheck.py"):
            self.assertFalse(ignored(path), path)

    def test_the_runtime_user_can_not_write_the_code(self):
        text = (ROOT / "Dockerfile").read_text()
        self.assertRegex(text, r"(?m)^COPY \. /app$")  # owned by root
        self.assertNotIn("--chown=app", text)
        self.assertIn("chmod -R a-w,a+rX /app", text)
        self.assertIn("chown -R app:app /app/staticfiles", text)
        self.assertLess(text.index("chmod -R a-w"), text.index("USER app"))


class EntrypointTests(SimpleTestCase):
    def run_entrypoint(self, env, *command):
        # `python` in the script must be this interpreter, as /opt/venv's is in the image.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        base = {**os.environ, "PATH": path, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 60}
        return subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *command], cwd="/",
                              env={**base, **env}, capture_output=True, text=True, timeout=120)

    def test_sh_accepts_the_script(self):
        subprocess.run(["sh", "-n", str(ROOT / "docker" / "entrypoint.sh")], check=True)

    def test_with_no_command_it_starts_gunicorn_on_the_wsgi_application(self):
        with tempfile.TemporaryDirectory() as tmp:
            # A stand-in gunicorn on PATH records how it was called.
            fake = Path(tmp) / "gunicorn"
            fake.write_text('#!/bin/sh\necho "gunicorn called with: $*"\n')
            fake.chmod(0o755)
            env = {"DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3", "DJANGO_STATIC_ROOT": f"{tmp}/static",
                   "APM_TIMESCALE": "auto", "PATH": f"{tmp}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                   f"{os.environ.get('PATH', '')}"}
            result = self.run_entrypoint(env)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("gunicorn called with: -c gunicorn.conf.py apm_platform.wsgi:application", result.stdout)

    def test_it_waits_migrates_collects_static_then_runs_the_command(self):
        with tempfile.TemporaryDirectory() as tmp:
            env = {"DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3", "DJANGO_STATIC_ROOT": f"{tmp}/static",
                   "APM_TIMESCALE": "auto"}
            result = self.run_entrypoint(env, "python", "-c", "print('command ran')")
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            out = result.stdout
            order = [out.index(s) for s in ("Database is up", "entrypoint: migrate", "Applying observability.0003",
                                            "entrypoint: apply_policies", "No policies on SQLite",
                                            "entrypoint: collectstatic", "command ran")]
            self.assertEqual(order, sorted(order))
            self.assertTrue((Path(tmp) / "static" / "staticfiles.json").is_file())

    def test_it_gives_up_on_a_dead_database_with_a_clear_message(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = self.run_entrypoint({"DATABASE_URL": f"postgres://apm@127.0.0.1:{port}/apm", "DB_WAIT_TIMEOUT": "2"},
                                     "python", "-c", "print('command ran')")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Database not reachable after", result.stderr)
        self.assertNotIn("command ran", result.stdout)
