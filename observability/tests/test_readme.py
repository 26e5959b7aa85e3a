"""The README's curl examples carry a key and work as written, in order, on a fresh database."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from django.test import SimpleTestCase

from benchmarks.support import Gunicorn

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
API = README[README.index("## The API"):README.index("## Demo data")]
SEND = README[README.index("## Send data"):README.index("## The API")]


def curl_commands(text: str) -> list[str]:
    """Each curl command in the bash blocks of `text`, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line for line in joined.splitlines() if "curl " in line]
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
        commands = curl_commands(README)
        self.assertGreater(len(commands), 15)
        for command in commands:
            if "/api/health/" not in command:
                self.assertRegex(command, r'-H "(Authorization: Bearer|X-API-Key:) \$APM_KEY"', command)

    def test_the_api_examples_give_the_documented_answers_in_order(self):
        self.assertGreaterEqual(self.run_examples(API), 4, "complete answers compared")

    def test_the_send_data_examples_give_the_documented_answers(self):
        # On a database of their own: the events they store would change The API's answers.
        self.assertGreaterEqual(self.run_examples(SEND), 2, "complete answers compared")

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
