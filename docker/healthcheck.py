"""Container health check: GET /api/health/ from the gunicorn in this container.

It sends a Host the settings accept (the first of DJANGO_ALLOWED_HOSTS), so the check keeps
working when ALLOWED_HOSTS names only the public host, and a redirect (to HTTPS, say) counts
as unhealthy rather than being followed. The health path is exempt from the HTTPS redirect
(settings.SECURE_REDIRECT_EXEMPT). Exit status 0: healthy.
"""

import http.client
import os
import sys


def main() -> int:
    port = int(os.environ.get("PORT") or 8000)
    hosts = [h.strip() for h in (os.environ.get("DJANGO_ALLOWED_HOSTS") or "localhost").split(",") if h.strip()]
    host = next((h.lstrip(".") for h in hosts if h != "*"), "localhost")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/api/health/", headers={"Host": host})
        status = conn.getresponse().status
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status != 200:
        print(f"healthcheck: /api/health/ answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
