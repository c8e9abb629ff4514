# One image, two roles: `convergence consume` (worker pool) or `convergence serve` (push + HTTP door).
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Sources only (see .dockerignore): tests, benchmarks and the venv stay out.
COPY . .
# No dev or local-stack extras in the image: production talks to real Pub/Sub, BigQuery and KMS.
# The installer goes once the service is in: nothing at run time installs packages.
RUN pip install . && python -m pip uninstall -y -q pip setuptools wheel

FROM python:3.11-slim
# No installer in the runtime image either: the base's pip, setuptools and wheel, and the wheels ensurepip
# and venv would reinstall them from (the official image's and Debian's places).
RUN set -eu; \
    for d in $(python3 -c 'import site, sysconfig; print(*site.getsitepackages(), sysconfig.get_path("stdlib") + "/ensurepip/_bundled")') \
             /usr/share/python-wheels; do \
      rm -rf "$d"/pip "$d"/pip-* "$d"/setuptools "$d"/setuptools-* "$d"/pkg_resources "$d"/_distutils_hack \
             "$d"/distutils-precedence.pth "$d"/wheel "$d"/wheel-*; \
    done; \
    rm -f /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/bin/wheel /usr/bin/pip /usr/bin/pip3*
RUN useradd --create-home --uid 10001 convergence
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# serve answers /health on HTTP_PORT; consume on METRICS_PORT (its /metrics and /health server).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ENVIRONMENT=production \
    LOG_FORMAT=json HTTP_PORT=8080 METRICS_PORT=9090
USER convergence
EXPOSE 8080 9090
# Unhealthy when /health does not answer 200 or, for consume, when a pool is not pulling (its stream not
# open, Pub/Sub not answering): one line in the health log says which.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["/opt/venv/bin/python", "-I", "-m", "convergence.healthcheck"]
ENTRYPOINT ["convergence"]
CMD ["serve"]
