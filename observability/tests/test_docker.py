"""The Docker files, checked with what runs without a Docker engine.

The compose file is parsed and held to plan Step 7; the entrypoint runs under sh against a
real database (and a dead one); the Dockerfile is read for the properties Step 7 asks for.
"""

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
        self.assertIn("/api/health/", " ".join(web["healthcheck"]["test"]))
        env = web["environment"]
        self.assertIn("@db:5432/", env["DATABASE_URL"])
        self.assertEqual(env["APM_TIMESCALE"], "require")
        for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS"):
            self.assertIn(name, env)

    def test_every_variable_the_stack_reads_is_in_env_example(self):
        example = (ROOT / ".env.example").read_text()
        used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker" / "docker-compose.yml").read_text()))
        settings_vars = set(re.findall(r'env_\w+\("(\w+)"', (ROOT / "apm_platform" / "settings.py").read_text()))
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

    def test_dockerignore_keeps_local_state_out_of_the_image(self):
        ignored = (ROOT / ".dockerignore").read_text().split()
        for entry in (".git", ".venv", "db.sqlite3", ".env", "staticfiles"):
            self.assertIn(entry, ignored)


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
