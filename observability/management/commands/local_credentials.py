"""Local development only: one admin API key and one staff login, kept in .local-credentials.json."""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from observability import access

USERNAME = "admin"


class Command(BaseCommand):
    help = ("Ensure a local admin API key and a staff login exist and print them (make run does this "
            "on every start; DJANGO_DEBUG=1 only).")

    def add_arguments(self, parser):
        parser.add_argument("--key-only", action="store_true", help="print the API key alone (for $(...))")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the server will listen")
        parser.add_argument("--file", default=str(Path(settings.BASE_DIR) / ".local-credentials.json"))

    def handle(self, *args, key_only, url, file, **options):
        if not settings.DEBUG:
            raise CommandError("local_credentials is for local development (DJANGO_DEBUG=1); "
                               "in production use create_api_key and createsuperuser.")
        path = Path(file)
        saved = json.loads(path.read_text()) if path.exists() else {}
        key = saved.get("api_key", "")
        principal = access.authenticate_key(key) if key else None
        if principal is None or principal.scope != "admin":
            _, key = access.create_key(name="local-admin (make run)", scope="admin")
        User = get_user_model()
        user = User.objects.filter(username=USERNAME).first()
        password = saved.get("password", "")
        if user is None:
            password = secrets.token_urlsafe(12)
            User.objects.create_user(USERNAME, password=password, is_staff=True)
        elif not password or not user.check_password(password):
            password = None  # someone chose their own: keep it
        saved = {"api_key": key, "username": USERNAME, "password": password}
        # Owner-only: it holds a working admin key (gitignored and kept out of the image).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(saved, handle, indent=2)
        if key_only:
            self.stdout.write(key)
            return
        login = (f"{USERNAME} / {password}" if password else
                 f"{USERNAME} with the password you set (reset: manage.py changepassword {USERNAME})")
        self.stdout.write(
            f"Local admin API key (saved in {path.name}): {key}\n"
            f"  for the README's curl examples: export APM_KEY=$(make -s key)\n"
            f"Log in to the pages at {url.rstrip('/')}/accounts/login/ as {login}"
        )
