from django.core.management.base import BaseCommand

from observability import access


class Command(BaseCommand):
    help = "Create an API key (run when a service or person needs one); the key is printed once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what uses the key, e.g. checkout-service")
        parser.add_argument("--scope", required=True, choices=access.SCOPES,
                            help="ingest: write events only; read: every GET; admin: everything")

    def handle(self, *args, name, scope, **options):
        row, key = access.create_key(name=name, scope=scope)
        self.stdout.write(f"Created {scope} key {row.prefix} ({name}). It is shown once and stored only as a hash:")
        self.stdout.write(key)
