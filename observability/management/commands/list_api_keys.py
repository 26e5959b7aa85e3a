from django.core.management.base import BaseCommand

from observability.models import ApiKey


def _when(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


class Command(BaseCommand):
    help = "List API keys: prefix, name, scope, created, last used, revoked (never the secrets)."

    def handle(self, *args, **options):
        rows = list(ApiKey.objects.all())
        self.stdout.write(f"{'prefix':<10} {'scope':<7} {'created':<21} {'last used':<21} {'revoked':<21} name")
        for row in rows:
            self.stdout.write(f"{row.prefix:<10} {row.scope:<7} {_when(row.created_at):<21} "
                              f"{_when(row.last_used_at):<21} {_when(row.revoked_at):<21} {row.name}")
        active = sum(1 for row in rows if row.revoked_at is None)
        self.stdout.write(f"{len(rows)} keys, {active} active.")
