"""The Docker files, checked with what runs without a Docker engine.

The compose file is parsed and held to plan Step 7; the entrypoint runs under sh against a
real database (and a dead one); the Dockerfile is read for the properties Step 7 asks for.
"""

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


def dockerignore_regex(pattern: str) -> re.Pattern:
    """One .dockerignore pattern as Docker compiles it (moby/patternmatcher): `*` and `?` stay
    within a path segment, `**` spans any number of them (`**/` also none)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*" and pattern[i + 1:i + 2] == "*":
            i += 2 if pattern[i + 2:i + 3] != "/" else 3
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i + 1)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end
        elif c == "\\":
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(f"^{out}$")


def dockerignore_rules(text: str) -> list[tuple[re.Pattern, bool]]:
    """(pattern, excludes) pairs in file order; patterns are cleaned as Docker does (a leading
    or trailing slash dropped), "!" re-includes."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).strip("/")
        rules.append((dockerignore_regex(pattern), not negate))
    return rules


def dockerignored(path: str, rules) -> bool:
    """Docker's verdict: the last pattern that matches the path or one of its parent
    directories wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for regex, excludes in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = excludes
    return verdict


def build_context(root: Path) -> list[str]:
    """The files `docker build` would send from `root`, by its .dockerignore."""
    rules = dockerignore_rules((root / ".dockerignore").read_text())
    reincludes = any(not excludes for _, excludes in rules)
    sent = []
    for directory, dirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        rel = "" if rel == "." else rel + "/"
        # An excluded directory is skipped whole unless a "!" pattern could bring something back.
        dirs[:] = [d for d in dirs if reincludes or not dockerignored(rel + d, rules)]
        sent += [rel + f for f in files if not dockerignored(rel + f, rules)]
        sent += [rel + d for d in dirs if os.path.islink(os.path.join(directory, d))
                 and not dockerignored(rel + d, rules)]
    return sorted(sent)


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

    def test_it_has_a_db_a_web_a_refresher_and_a_proxy_service(self):
        self.assertEqual(set(self.services), {"db", "web", "refresher", "proxy"})

    def test_the_refresher_runs_the_web_image_against_the_same_database_once_web_has_migrated(self):
        web, refresher = self.services["web"], self.services["refresher"]
        self.assertEqual(refresher["build"], web["build"])
        self.assertEqual(refresher["command"], ["python", "manage.py", "refresh_rollups", "--follow"])
        # web's entrypoint migrates; the refresher's would race it if both started together.
        self.assertEqual(refresher["depends_on"]["web"]["condition"], "service_healthy")
        self.assertEqual(refresher["restart"], "unless-stopped")
        self.assertEqual(refresher["env_file"], web["env_file"])
        for name in ("DATABASE_URL", "DATABASE_PASSWORD", "APM_TIMESCALE", "DJANGO_SECRET_KEY",
                     "APM_RETENTION_RAW_DAYS", "APM_RETENTION_FINE_DAYS"):
            self.assertEqual(refresher["environment"][name], web["environment"][name], name)
        self.assertNotIn("ports", refresher)
        self.assertTrue((ROOT / "observability" / "management" / "commands" / "refresh_rollups.py").is_file())

    def test_only_the_proxy_is_published_and_it_runs_the_config_the_proxy_test_runs(self):
        proxy = self.services["proxy"]
        self.assertRegex(proxy["image"], r"^nginx:\d+\.\d+\.\d+(-\w+)?$")  # pinned, never :latest
        self.assertIn("./nginx.conf:/etc/nginx/nginx.conf:ro", proxy["volumes"])
        self.assertTrue((ROOT / "docker" / "nginx.conf").is_file())
        self.assertIn(":80", proxy["ports"][0])
        self.assertIn("listen 80;", (ROOT / "docker" / "nginx.conf").read_text())
        self.assertIn("set $app web:8000;", (ROOT / "docker" / "nginx.conf").read_text())
        # gunicorn never faces clients; the database is published only on request (DB_PORT).
        self.assertNotIn("ports", self.services["web"])
        self.assertEqual(self.services["web"]["expose"], ["8000"])
        self.assertNotIn("ports", self.services["db"])

    def test_db_port_publishes_the_database_on_loopback_only_when_asked(self):
        override = yaml_load(interpolate((ROOT / "docker" / "docker-compose.db-port.yml").read_text(),
                                         {"DB_PORT": "5433"}))
        self.assertEqual(override["services"]["db"]["ports"], ["127.0.0.1:5433:5432"])
        with self.assertRaises(MissingVariable):
            interpolate((ROOT / "docker" / "docker-compose.db-port.yml").read_text(), {})
        self.assertRegex((ROOT / ".env.example").read_text(), r"(?m)^# DB_PORT=")  # off by default

    def test_it_needs_compose_2_24_and_the_deploy_docs_say_so(self):
        web = self.services["web"]
        self.assertIn("name", self.compose)  # compose 1.x rejects the top-level name...
        self.assertIn("required", web["env_file"][0])  # ...and env_file entries with `required` (2.24.0)
        self.assertIn("Compose v2.24.0", (ROOT / "docs" / "DEPLOY.md").read_text())
        self.assertIn("COMPOSE_MIN=2.24.0", (ROOT / "scripts" / "lib" / "compose.sh").read_text())

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
        self.assertEqual(compose["services"]["proxy"]["ports"], ["127.0.0.1:8000:80"],
                         "loopback unless WEB_BIND opts in")
        opened = yaml_load(interpolate((ROOT / "docker" / "docker-compose.yml").read_text(),
                                       {**dotenv, "WEB_BIND": "0.0.0.0"}))
        self.assertEqual(opened["services"]["proxy"]["ports"], ["0.0.0.0:8000:80"])
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
        self.assertIn("COMPOSE := bash scripts/lib/compose.sh", (ROOT / "Makefile").read_text())
        self.assertIn('docker compose --env-file .env "${files[@]}"',
                      (ROOT / "scripts" / "lib" / "compose.sh").read_text())
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


class ComposeCheckTests(SimpleTestCase):
    """scripts/lib/compose.sh (make up/down/logs) with a stand-in `docker` on PATH."""

    def run_check(self, docker_script: str | None, *args, env: dict | None = None, dotenv: str | None = None):
        with tempfile.TemporaryDirectory() as tmp:
            bin_dir = Path(tmp) / "bin"
            bin_dir.mkdir()
            # A copy of the project's files the script reads, so .env can be whatever the test says.
            project = Path(tmp) / "project"
            (project / "scripts" / "lib").mkdir(parents=True)
            script = project / "scripts" / "lib" / "compose.sh"
            script.write_text((ROOT / "scripts" / "lib" / "compose.sh").read_text())
            if dotenv is not None:
                (project / ".env").write_text(dotenv)
            if docker_script is not None:
                (bin_dir / "docker").write_text("#!/bin/sh\n" + docker_script)
                (bin_dir / "docker").chmod(0o755)
            for tool in ("sed", "sort", "head", "tail", "tr", "dirname"):
                (bin_dir / tool).symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                                                           text=True, check=True).stdout.strip())
            bash = subprocess.run(["sh", "-c", "command -v bash"], capture_output=True, text=True).stdout.strip()
            return subprocess.run([bash, str(script), *args],
                                  capture_output=True, text=True, timeout=30,
                                  env={"PATH": str(bin_dir), **(env or {})})

    FAKE_V2 = ('if [ "$1 $2" = "compose version" ]; then echo "{version}"; exit 0; fi\n'
               'echo "docker called with: $*"\n')

    def test_a_new_enough_compose_runs_with_the_root_env_file_and_no_database_port(self):
        result = self.run_check(self.FAKE_V2.format(version="2.27.1"), "up", "--build", "-d")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(),
                         "docker called with: compose --env-file .env -f docker/docker-compose.yml up --build -d")

    def test_db_port_in_env_or_dotenv_adds_the_override_that_publishes_the_database(self):
        override = "-f docker/docker-compose.yml -f docker/docker-compose.db-port.yml up"
        for kwargs in ({"env": {"DB_PORT": "5433"}}, {"dotenv": "# comment\nDB_PORT=5433\n"}):
            result = self.run_check(self.FAKE_V2.format(version="v2.24.0"), "up", **kwargs)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(override, result.stdout, kwargs)
        result = self.run_check(self.FAKE_V2.format(version="2.24.0"), "up", dotenv="# DB_PORT=5433\nWEB_PORT=8000\n")
        self.assertNotIn("db-port", result.stdout)

    def test_an_old_compose_is_named_in_one_line_and_nothing_runs(self):
        result = self.run_check(self.FAKE_V2.format(version="2.20.2"), "up")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr.strip().count("\n"), 0, result.stderr)
        self.assertIn("Docker Compose 2.20.2 is too old; v2.24.0 or later is needed", result.stderr)

    def test_a_missing_compose_plugin_or_docker_is_named_in_one_line(self):
        # Debian 12's docker.io has no compose plugin (its docker-compose 1.29 is a separate program).
        result = self.run_check('echo "docker: unknown command: docker compose" >&2; exit 1\n', "up")
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(result.stderr.strip().count("\n"), 0, result.stderr)
        self.assertIn("'docker compose' (the Compose v2 plugin) is missing", result.stderr)
        result = self.run_check(None, "up")
        self.assertEqual(result.returncode, 1)
        self.assertIn("docker not found", result.stderr)


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
        rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
        for path in (".git", ".venv", ".env", ".env.local", ".env.production", ".local-credentials.json",
                     "db.sqlite3", "db.sqlite3-journal", "apm.sqlite3", "staticfiles", "node_modules", ".cache",
                     ".demo", ".tools", "venv", ".venv-dev", "docs/examples/django_app/.venv/bin/python",
                     "reports/step6_tests.log", "docker/docker-compose.yml", "docker/docker-compose.db-port.yml"):
            self.assertTrue(dockerignored(path, rules), path)
        for path in (".env.example", "manage.py", "observability", "docker/entrypoint.sh", "docker/healthcheck.py",
                     "requirements.txt", "gunicorn.conf.py"):
            self.assertFalse(dockerignored(path, rules), path)

    def test_the_build_context_holds_no_venv_git_database_local_state_or_logs(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            kept = ["manage.py", "requirements.txt", ".env.example", "observability/models.py",
                    "docker/entrypoint.sh", "apm_platform/settings.py", "docs/examples/django_app/app.py"]
            left_out = [".git/HEAD", ".venv/bin/python", "venv/bin/python", ".venv-dev/pyvenv.cfg",
                        "docs/examples/fastapi_app/.venv/lib/site.py", ".demo/django_app.log", ".demo/apm.sqlite3",
                        ".tools/newman/bin/newman", "db.sqlite3", "db.sqlite3-wal", "reports/step6_tests.log",
                        "reports/bench_ingest.md", ".local-credentials.json", ".env", "staticfiles/x.css",
                        "observability/__pycache__/models.cpython-311.pyc", "apm.log"]
            for name in kept + left_out:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text("x")
            (root / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
            (root / ".venv-link").symlink_to(root / ".venv")  # a worktree's .venv is a symlink
            self.assertEqual(build_context(root), sorted([*kept, ".dockerignore"]))
        # And this checkout as it is now, whatever lies around in it.
        sent = build_context(ROOT)
        self.assertIn("manage.py", sent)
        for path in sent:
            top = path.split("/")[0]
            self.assertNotRegex(path, r"venv|\.sqlite3|\.log$", path)
            self.assertNotIn(top, {".git", ".demo", ".tools", "reports", "staticfiles", ".local-credentials.json"},
                             path)

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
