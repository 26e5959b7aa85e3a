"""Deploy settings: the production checks pass, and a missing secret fails loudly."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k7#Qz!v9@Lm2$Xp4^Rt6&Wy8*Bn1(Hc3)Jd5_Fg0+Ks2-Np4=Ur6",
    "DJANGO_ALLOWED_HOSTS": "apm.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://apm.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
    "DATABASE_URL": "postgres://apm:secret@db.internal:5432/apm",
    "DB_SSLMODE": "require",
}
CLEARED = ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DATABASE_URL", "DJANGO_STATIC_ROOT", "APM_TIMESCALE")


def run(args, env):
    base = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("DJANGO_SECURE")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)


class DeploySettingsTests(SimpleTestCase):
    def test_check_deploy_passes_with_production_environment(self):
        with tempfile.TemporaryDirectory() as static:
            env = {**PRODUCTION_ENV, "DJANGO_STATIC_ROOT": static}  # a deployment runs collectstatic
            collected = run(["manage.py", "collectstatic", "--noinput", "-v", "0"], env)
            self.assertEqual(collected.returncode, 0, collected.stderr)
            result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_check_deploy_names_collectstatic_when_static_files_were_not_collected(self):
        with tempfile.TemporaryDirectory() as static:
            env = {**PRODUCTION_ENV, "DJANGO_STATIC_ROOT": static}
            result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("apm.W001", result.stderr)
            self.assertIn("collectstatic --noinput", result.stderr)
            # Neither collectstatic itself nor the other commands are held up by it.
            self.assertEqual(run(["manage.py", "check"], env).returncode, 0)
            collected = run(["manage.py", "collectstatic", "--noinput", "-v", "0"], env)
            self.assertEqual(collected.returncode, 0, collected.stderr)
            self.assertTrue(Path(static, "staticfiles.json").is_file())

    def test_check_deploy_fails_without_the_tls_settings(self):
        env = {k: v for k, v in PRODUCTION_ENV.items() if not k.startswith("DJANGO_SECURE")}
        result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("security.W004", result.stdout + result.stderr)

    def test_a_missing_secret_key_with_debug_off_fails_at_start(self):
        env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
        result = run(["manage.py", "check"], env)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DJANGO_SECRET_KEY must be set", result.stderr)

    def test_settings_read_from_the_environment(self):
        code = ("import django; django.setup(); from django.conf import settings as s; "
                "print(s.DEBUG, s.ALLOWED_HOSTS, s.DATABASES['default']['OPTIONS']['sslmode'], "
                "s.DATABASES['default']['CONN_HEALTH_CHECKS'], s.SECURE_HSTS_SECONDS, s.TIME_ZONE, s.USE_TZ)")
        result = run(["-c", code], {**PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE": "apm_platform.settings"})
        self.assertEqual(result.stdout.strip(), "False ['apm.example.com'] require True 31536000 UTC True",
                         result.stderr)

    def test_a_bad_boolean_is_refused_not_guessed(self):
        result = run(["manage.py", "check"], {**PRODUCTION_ENV, "DJANGO_DEBUG": "maybe"})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DJANGO_DEBUG must be a boolean", result.stderr)

    def test_whitenoise_sits_right_after_the_security_middleware(self):
        from django.conf import settings

        middleware = settings.MIDDLEWARE
        index = middleware.index("django.middleware.security.SecurityMiddleware")
        self.assertEqual(middleware[index + 1], "whitenoise.middleware.WhiteNoiseMiddleware")
        self.assertEqual(settings.INSTALLED_APPS[0], "whitenoise.runserver_nostatic")


def env_example() -> dict:
    """.env.example as a fresh user's .env: every line, empty values included."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


SHOW = ("import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([str(s.STATIC_ROOT), s.DATABASES['default']['ENGINE'], str(s.DATABASES['default']['NAME']), "
        "s.ALLOWED_HOSTS, s.DEBUG, s.APM_INGEST_RATE_LIMIT, s.APM_INGEST_RATE_BURST, s.APM_API_KEY_CACHE_SECONDS, "
        "s.DATABASES['default'].get('PASSWORD'), s.SECURE_REDIRECT_EXEMPT]))")


class EmptyMeansUnsetTests(SimpleTestCase):
    """A .env copied from .env.example: its empty values must mean the defaults, never ''."""

    def show(self, env):
        result = run(["-c", SHOW], {**env, "DJANGO_SETTINGS_MODULE": "apm_platform.settings"})
        self.assertEqual(result.returncode, 0, result.stderr)
        import json

        return json.loads(result.stdout)

    def test_the_example_env_file_as_copied_gives_the_defaults(self):
        env = {**env_example(), "DJANGO_SECRET_KEY": "s" * 50}
        self.assertEqual(env["DJANGO_STATIC_ROOT"], "")
        self.assertEqual(env["DATABASE_URL"], "")
        static, engine, name, hosts, debug, rate, burst, cache, password, exempt = self.show(env)
        self.assertEqual(static, str(ROOT / "staticfiles"))  # not the working directory
        self.assertEqual((engine, name), ("django_prometheus.db.backends.sqlite3", str(ROOT / "db.sqlite3")))
        self.assertEqual((hosts, debug, rate, burst, cache), (["localhost", "127.0.0.1"], False, 0, 10_000, 30))
        self.assertEqual(password, "")
        self.assertEqual(exempt, [r"^api/health/?$"])

    def test_every_helper_treats_empty_as_unset(self):
        from apm_platform import env

        names = {"APM_T_STR": "", "APM_T_BOOL": " ", "APM_T_INT": "", "APM_T_LIST": ""}
        with mock.patch.dict(os.environ, names):
            self.assertEqual(env.env_str("APM_T_STR", "d"), "d")
            self.assertIs(env.env_bool("APM_T_BOOL", True), True)
            self.assertEqual(env.env_int("APM_T_INT", 7), 7)
            self.assertEqual(env.env_list("APM_T_LIST", ["a"]), ["a"])

    def test_a_database_password_with_url_special_characters_works(self):
        password = "p@ss/w:rd#1?%"
        url = "postgres://apm@db.internal:5432/apm"
        shown = self.show({"DJANGO_SECRET_KEY": "s" * 50, "DATABASE_URL": url, "DATABASE_PASSWORD": password})
        self.assertEqual(shown[8], password)
        encoded = "postgres://apm:p%40ss%2Fw%3Ard%231%3F%25@db.internal:5432/apm"
        self.assertEqual(self.show({"DJANGO_SECRET_KEY": "s" * 50, "DATABASE_URL": encoded})[8], password)

    def test_rate_limit_settings(self):
        base = {"DJANGO_SECRET_KEY": "s" * 50}
        self.assertEqual(self.show({**base, "APM_INGEST_RATE_LIMIT": "50000"})[5:7], [50000, 50000])
        self.assertEqual(self.show({**base, "APM_INGEST_RATE_LIMIT": "100"})[5:7], [100, 10000])


class OneLineErrorTests(SimpleTestCase):
    """A bad environment stops manage.py with one line naming the problem, not a traceback."""

    def assert_one_line(self, env, *words):
        result = run(["manage.py", "check"], env)
        self.assertNotEqual(result.returncode, 0)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        for word in words:
            self.assertIn(word, lines[0])

    def test_no_secret_key_with_debug_off(self):
        self.assert_one_line({"DJANGO_DEBUG": "0"}, "manage.py:", "DJANGO_SECRET_KEY must be set")
        self.assert_one_line({"DJANGO_DEBUG": "", "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set")

    def test_a_static_root_that_would_serve_the_code(self):
        for root in (str(ROOT), "/", "."):
            self.assert_one_line({"DJANGO_DEBUG": "1", "DJANGO_STATIC_ROOT": root}, "DJANGO_STATIC_ROOT")

    def test_a_burst_below_one_batch_or_a_cache_period_above_a_minute(self):
        self.assert_one_line({"DJANGO_DEBUG": "1", "APM_INGEST_RATE_LIMIT": "10", "APM_INGEST_RATE_BURST": "100"},
                             "APM_INGEST_RATE_BURST")
        self.assert_one_line({"DJANGO_DEBUG": "1", "APM_API_KEY_CACHE_SECONDS": "61"}, "APM_API_KEY_CACHE_SECONDS")
