from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from observability import access


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (see list_api_keys); every worker refuses it within a minute."

    def add_arguments(self, parser):
        parser.add_argument("prefix", help="the key's public prefix: the 8 characters after apm_")

    def handle(self, *args, prefix, **options):
        prefix = prefix.removeprefix("apm_").split("_")[0]
        row = access.revoke_key(prefix)
        if row is None:
            raise CommandError(f"No API key has the prefix {prefix!r} (see list_api_keys).")
        self.stdout.write(f"Revoked {row.prefix} ({row.name}, {row.scope}); running workers refuse it within "
                          f"{settings.APM_API_KEY_CACHE_SECONDS} s.")
