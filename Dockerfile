# One image, two roles: `convergence consume` (worker pool) or `convergence serve` (push + HTTP door).
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Sources only (see .dockerignore): tests, benchmarks and the venv stay out.
COPY . .
# No dev or local-stack extras in the image: production talks to real Pub/Sub, BigQuery and KMS.
RUN pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 convergence
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# serve answers /health on HTTP_PORT; consume on METRICS_PORT (its /metrics and /health server).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ENVIRONMENT=production \
    LOG_FORMAT=json HTTP_PORT=8080 METRICS_PORT=9090
USER convergence
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import os,urllib.request as u; role=open('/proc/1/cmdline','rb').read(); port=os.environ['METRICS_PORT' if b'consume' in role else 'HTTP_PORT']; u.urlopen(f'http://127.0.0.1:{port}/health', timeout=4)"
ENTRYPOINT ["convergence"]
CMD ["serve"]
