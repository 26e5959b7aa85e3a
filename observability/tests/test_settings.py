"""Deploy settings: the production checks pass, and a missing secret fails loudly."""

import os
import subprocess
import sys
from pathlib import Path

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
CLEARED = ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DATABASE_URL")


def run(args, env):
    base = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("DJANGO_SECURE")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)


class DeploySettingsTests(SimpleTestCase):
    def test_check_deploy_passes_with_production_environment(self):
        result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

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
