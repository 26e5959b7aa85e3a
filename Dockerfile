# syntax=docker/dockerfile:1
# Production image: gunicorn serving the API, WhiteNoise serving static files, non-root.

# --- build: install the pinned requirements into a virtualenv -------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# --- runtime: the virtualenv and the code, nothing else -------------------------------------
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_STATIC_ROOT=/app/staticfiles \
    PORT=8000
RUN groupadd --system app && useradd --system --gid app --home-dir /app --no-create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root and is read-only to the app user: a compromised process can't
# rewrite it. Only staticfiles/ (collectstatic at start) is the app user's.
COPY . /app
# Static files are collected at build time (with a throwaway key and database: nothing is
# connected); the entrypoint runs collectstatic again, which is a no-op unless they changed.
RUN DJANGO_SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
        python manage.py collectstatic --noinput \
    && rm -f /tmp/build.sqlite3 \
    && chmod -R a-w,a+rX /app \
    && chmod 0555 docker/entrypoint.sh \
    && chown -R app:app /app/staticfiles \
    && chmod -R u+w /app/staticfiles
USER app
EXPOSE 8000
# With no command the entrypoint starts gunicorn -c gunicorn.conf.py apm_platform.wsgi:application.
ENTRYPOINT ["/app/docker/entrypoint.sh"]
