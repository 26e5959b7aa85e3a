"""scripts/lib/bootstrap.sh picks the requirements file for its mode and keeps a stamp per mode.

Run in a temporary copy with a stand-in python (it records the pip command instead of
installing): `make run` must install requirements.txt alone, the test tools only when a test,
lint or benchmark target needs them.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
# Records what it was asked to do; "-m venv DIR" makes DIR/bin/python this same stand-in.
echo "$*" >> "$BOOTSTRAP_LOG"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && chmod +x "$3/bin/python"; fi
"""


class BootstrapModeTests(SimpleTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        (self.tmp / "scripts" / "lib").mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "lib" / "bootstrap.sh", self.tmp / "scripts" / "lib" / "bootstrap.sh")
        (self.tmp / "requirements.txt").write_text("Django==5.2\n")
        (self.tmp / "requirements-dev.txt").write_text("-r requirements.txt\nruff==0.1\n")
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        (self.bin / "python3").write_text(FAKE_PYTHON)
        (self.bin / "python3").chmod(0o755)
        self.log = self.tmp / "calls.log"

    def bootstrap(self, mode: str | None) -> tuple[int, list[str]]:
        """Source the script as the Makefile does; the return code and the commands it ran."""
        self.log.write_text("")
        env = {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "BOOTSTRAP_LOG": str(self.log)}
        if mode is not None:
            env["APM_BOOTSTRAP"] = mode
        result = subprocess.run(["bash", "-c", 'source scripts/lib/bootstrap.sh && echo "PY=$PY"'], cwd=self.tmp,
                                env=env, capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            self.assertIn(f"PY={self.tmp}/.venv/bin/python", result.stdout)
        return result.returncode, [line for line in self.log.read_text().splitlines() if line]

    def installed(self, calls: list[str]) -> list[str]:
        return [call.rsplit("-r ", 1)[1].rsplit("/", 1)[1] for call in calls if "pip install" in call]

    def stamps(self) -> set[str]:
        return {p.name for p in (self.tmp / ".venv").glob(".requirements*.sha256")}

    def test_runtime_mode_installs_requirements_txt_alone_and_stamps_runtime(self):
        rc, calls = self.bootstrap("runtime")
        self.assertEqual(rc, 0)
        self.assertEqual(self.installed(calls), ["requirements.txt"])
        self.assertEqual(self.stamps(), {".requirements-runtime.sha256"})
        self.assertEqual(self.bootstrap("runtime"), (0, []), "nothing changed: nothing installed")

    def test_dev_mode_is_the_default_and_also_satisfies_runtime(self):
        rc, calls = self.bootstrap(None)
        self.assertEqual((rc, self.installed(calls)), (0, ["requirements-dev.txt"]))
        self.assertEqual(self.stamps(), {".requirements-runtime.sha256", ".requirements.sha256"})
        self.assertEqual(self.bootstrap("runtime"), (0, []))
        self.assertEqual(self.bootstrap("dev"), (0, []))

    def test_after_a_runtime_install_a_test_run_adds_the_dev_tools(self):
        self.bootstrap("runtime")
        self.assertEqual(self.installed(self.bootstrap("dev")[1]), ["requirements-dev.txt"])

    def test_each_mode_reinstalls_only_when_its_own_files_changed(self):
        self.bootstrap("dev")
        (self.tmp / "requirements-dev.txt").write_text("-r requirements.txt\nruff==0.2\n")
        self.assertEqual(self.bootstrap("runtime"), (0, []), "a dev tool's pin is not make run's business")
        self.assertEqual(self.installed(self.bootstrap("dev")[1]), ["requirements-dev.txt"])
        (self.tmp / "requirements.txt").write_text("Django==5.2.1\n")
        self.assertEqual(self.installed(self.bootstrap("runtime")[1]), ["requirements.txt"])
        self.assertEqual(self.installed(self.bootstrap("dev")[1]), ["requirements-dev.txt"])

    def test_a_venv_stamped_before_the_modes_counts_as_dev_and_needs_no_install(self):
        self.bootstrap("dev")
        (self.tmp / ".venv" / ".requirements-runtime.sha256").unlink()  # as an older bootstrap left it
        self.assertEqual(self.bootstrap("runtime"), (0, []))

    def test_an_unknown_mode_fails_and_installs_nothing(self):
        self.assertEqual(self.bootstrap("everything"), (1, []))

    def test_make_run_and_the_service_targets_bootstrap_runtime_and_test_lint_bench_dev(self):
        makefile = (ROOT / "Makefile").read_text()
        self.assertIn("RUN_PY := APM_BOOTSTRAP=runtime source scripts/lib/bootstrap.sh &&", makefile)
        recipes = dict(re.findall(r"(?m)^([\w-]+):.*\n((?:\t.*\n?)*)", makefile))
        for target in ("run", "install", "key", "migrate", "seed", "manage"):
            self.assertIn("$(RUN_PY)", recipes[target], target)
        for target in ("lint", "bench", "bench-ingest", "bench-sqlite", "install-dev"):
            self.assertIn("$(VENV_PY)", recipes[target], target)
        self.assertIn("scripts/step6_test.sh", recipes["step6"])  # which sources bootstrap.sh: dev
        self.assertNotIn("APM_BOOTSTRAP", (ROOT / "scripts" / "step6_test.sh").read_text())
