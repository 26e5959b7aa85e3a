"""The README's commands work as printed, in order, on a fresh clone; the curl examples of the
README and of the reference docs carry a key and give the documented answers."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from django.test import SimpleTestCase

from observability.tests.live import Gunicorn, free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
API_DOC = (ROOT / "docs" / "API.md").read_text()
# The API walk-through (events, ingest, rollups, KPIs, ...) runs in order on one database; the
# Send data examples on one of their own (the events they store would change the answers).
API = API_DOC[API_DOC.index("## Events"):]
SEND = API_DOC[API_DOC.index("## Send data"):API_DOC.index("## Events")]
# Every document with curl examples a reader may paste.
DOCS = {name: (ROOT / name).read_text() for name in ("README.md", "docs/API.md", "docs/OPERATIONS.md",
                                                      "docs/DEPLOY.md", "docs/ARCHITECTURE.md")}


def curl_commands(text: str) -> list[str]:
    """Each curl command in the bash blocks of `text`, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line for line in joined.splitlines() if re.search(r"(^|\$\(|\|)\s*curl ", line.strip())]
    return commands


def json_values(text: str) -> list:
    """The JSON values curl printed back to back (-s adds no newline), other output skipped."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while i < len(text):
        if text[i] in "{[":
            value, i = decoder.raw_decode(text, i)
            values.append(value)
        else:
            i += 1
    return values


class ReadmeCurlTests(SimpleTestCase):
    def test_every_curl_but_health_carries_the_key(self):
        commands = [command for text in DOCS.values() for command in curl_commands(text)]
        self.assertGreater(len(commands), 15)
        self.assertGreaterEqual(len(curl_commands(README)), 5, "the quick start's own curls are covered")
        for command in commands:
            if "/api/health/" not in command:
                self.assertRegex(command, r'-H "(Authorization: Bearer|X-API-Key:) \$APM_KEY"', command)

    def test_the_api_examples_give_the_documented_answers_in_order(self):
        self.assertGreaterEqual(self.run_examples(API), 4, "complete answers compared")

    def test_the_send_data_examples_give_the_documented_answers(self):
        # On a database of their own: the events they store would change The API's answers.
        self.assertGreaterEqual(self.run_examples(SEND), 2, "complete answers compared")

    def test_no_url_with_a_query_string_is_left_unquoted_for_zsh(self):
        for name, text in DOCS.items():
            for command in curl_commands(text):
                for url in re.findall(r"(?<!['\"])http://\S*\?\S*", command):
                    self.fail(f"{name}: unquoted URL with '?' (zsh globs it): {url}")

    def run_examples(self, section: str) -> int:
        """Run the section's bash blocks with curl in order against a fresh gunicorn (its own
        SQLite file and admin key) and compare each complete answer; how many were compared."""
        if shutil.which("curl") is None:
            raise unittest.SkipTest("curl is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            env = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "readme-" + "x" * 50, "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                   "DATABASE_URL": f"sqlite:///{tmp}/readme.sqlite3", "APM_TIMESCALE": "off",
                   "DJANGO_STATIC_ROOT": f"{tmp}/static", "DJANGO_LOG_LEVEL": "ERROR"}
            manage = [sys.executable, "manage.py"]
            subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, **env}, check=True)
            key = subprocess.run([*manage, "create_api_key", "readme", "--scope", "admin"], cwd=ROOT, check=True,
                                 env={**os.environ, **env}, capture_output=True, text=True).stdout.splitlines()[-1]
            with Gunicorn(env) as server:
                blocks = [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "curl " in b]
                checked = 0
                for block in blocks:
                    script = block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
                    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                                            env={**os.environ, "APM_KEY": key})
                    self.assertEqual(result.returncode, 0, result.stderr)
                    answers = json_values(result.stdout)
                    self.assertTrue(answers, block)
                    for answer in answers:
                        if isinstance(answer, dict):
                            self.assertNotIn(answer.get("detail"), ("Authentication credentials were not provided.",
                                                                    "Invalid or revoked API key."))
                    for comment in re.findall(r"(?m)^# (?:HTTP \d+ )?(\{.*\})$", block):
                        try:
                            want = json.loads(comment)
                        except ValueError:
                            continue  # an abbreviated answer ("...")
                        self.assertIn(want, answers, comment)
                        checked += 1
                return checked


class ReadmeQuickStartTests(SimpleTestCase):
    """Every command of the README, as printed and in order, in a copy of the repository (a fresh
    clone: no database, no credentials) with a clean environment, against its own `make run`."""

    # Left to a fresh shell: what `make run` and the README's commands read from the environment.
    CLEARED = re.compile(r"^(DATABASE_|DB_|DJANGO_|APM_|PORT$|OTEL_|PROMETHEUS_)")

    def test_the_readme_commands_work_as_printed_in_order(self):
        for tool in ("curl", "make"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} is not installed")
        if not (ROOT / ".venv" / "bin" / "python").exists():
            raise unittest.SkipTest("no .venv to share with the copy (make test creates it; an image has none)")
        blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
        self.assertGreaterEqual(len(blocks), 5)
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            shutil.copytree(ROOT, clone, symlinks=True, ignore=shutil.ignore_patterns(
                ".git", ".venv", "db.sqlite3*", ".local-credentials.json", "staticfiles", ".cache", ".tools",
                ".demo", "node_modules", "reports", "__pycache__", ".env"))
            (clone / ".venv").symlink_to(ROOT / ".venv")  # installed once by the test command itself
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not self.CLEARED.match(k)}
            env["PATH"] = os.environ["PATH"]
            script, server = ["set -e"], None
            for number, block in enumerate(blocks):
                runnable = []
                for line in block.splitlines():
                    command = line.split("#", 1)[0].strip()
                    if command == "make test":
                        continue  # this test is part of it
                    if command == "make run":
                        server = self.start(clone, env, port)
                        continue
                    if command.startswith("sudo apt-get install"):
                        self.assert_installed(command.split()[4:])
                        continue
                    runnable.append(line)
                script.append(f"echo '@@block {number}@@'")
                script.append("\n".join(runnable).replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
            self.assertIsNotNone(server, "the README starts the server with make run")
            try:
                result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True,
                                        text=True, timeout=300)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
            self.assertEqual(result.returncode, 0, result.stdout[-2000:] + result.stderr[-4000:])
            outputs = re.split(r"@@block (\d+)@@\n", result.stdout)[1:]
            compared = 0
            for number, output in zip(outputs[::2], outputs[1::2], strict=True):
                answers = json_values(output)
                for comment in re.findall(r"(?m)^# (?:HTTP \d+ )?(\{.*\})$", blocks[int(number)]):
                    self.assertIn(json.loads(comment), answers, comment)  # never abbreviated here
                    compared += 1
            self.assertGreaterEqual(compared, 5, "health, ingest and the three API calls")

    def start(self, clone, env, port):
        server = subprocess.Popen(["make", "run"], cwd=clone, env={**env, "PORT": str(port)}, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
        os.killpg(server.pid, signal.SIGTERM)
        self.fail("make run did not serve /api/health/ within 180 s")

    def assert_installed(self, packages):
        """The prerequisites line can't run here (no sudo); what it installs must be present."""
        if shutil.which("dpkg-query") is None:
            return
        for package in packages:
            status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
            self.assertIn("install ok installed", status.stdout, f"prerequisite {package} is not installed")


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"(?m)^#{1,6} (.*)$", text)}


class ReferenceDocsTests(SimpleTestCase):
    def test_every_path_query_parameter_and_status_of_the_schema_is_in_the_api_reference(self):
        import yaml

        schema = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
        for path, operations in schema["paths"].items():
            self.assertIn(re.sub(r"\{\w+\}/?$", "", path).rstrip("/"), API_DOC, path)
            for method, operation in operations.items():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "query":
                        self.assertIn(f"`{parameter['name']}`", API_DOC, f"{method.upper()} {path}")
                for status in operation.get("responses", {}):
                    self.assertRegex(API_DOC, rf"\b{status}\b", f"{method.upper()} {path}")

    def test_every_link_between_the_docs_reaches_a_file_and_heading_that_exist(self):
        for name, text in DOCS.items():
            here = (ROOT / name).parent
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if target.startswith(("http://", "https://")):
                    continue
                path, _, anchor = target.partition("#")
                file = (here / path).resolve() if path else ROOT / name
                self.assertTrue(file.exists(), f"{name}: {target}")
                if anchor and file.suffix == ".md":
                    self.assertIn(anchor, anchors(file.read_text()), f"{name}: {target}")

    def test_the_readme_stays_a_five_minute_read(self):
        self.assertLessEqual(len(README.encode()), 8192)
        self.assertIn("## Send data", README)  # the dashboard's empty state links to #send-data
