# Space Beaver backend image: Ray head/worker pods, the runbackend driver and the admin (gunicorn).
# The Ray and Python versions in the tag must match pyproject.toml (ray[serve]==X, requires-python);
# tests/unit/test_k8s_manifests.py checks it.
FROM rayproject/ray:2.60.0-py311-cpu

# The Ray image runs as the unprivileged user `ray` (uid 1000, group users) with its own
# Python in /home/ray/anaconda3; stay that user for pip and at run time.
USER ray
WORKDIR /home/ray/app

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=web.settings \
    DATA_DIR=/home/ray/data

# Dependencies first (pinned in pyproject.toml), so code changes do not reinstall them.
COPY --chown=ray:users pyproject.toml ./
RUN mkdir -p messaging web \
    && touch messaging/__init__.py web/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall -y spacebeaver \
    && rm -rf messaging web

# The project itself (manage.py stays in WORKDIR for `python manage.py ...`).
COPY --chown=ray:users . .
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p /home/ray/data \
    && python -m messaging.operations.haproxy_admin --write-launcher /home/ray/app/bin/spacebeaver-haproxy

# 2525: SMTP intake (the couriers' mail servers); 8000: Ray Serve HTTP (and gunicorn in the admin pod).
EXPOSE 2525 8000

# Standalone (docker run): the whole backend. In Kubernetes, KubeRay sets the Ray pods' command
# and k8s/backend.yaml / k8s/admin.yaml set theirs.
CMD ["python", "manage.py", "runbackend"]
