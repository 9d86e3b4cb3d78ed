# The gateway image. PYTHON_IMAGE lets machines without a registry build on a local base image
# (see scripts/build-local-images); everyone else gets the official slim image.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/gateway
WORKDIR /build
# Dependencies first, in their own layer: editing src/ does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/gateway/bin/pip install -q -c constraints.txt -r requirements.txt
COPY README.md ./
COPY src ./src
RUN /opt/gateway/bin/pip install -q --no-deps . \
 && /opt/gateway/bin/pip uninstall -q -y pip

FROM ${PYTHON_IMAGE}
COPY --from=builder /opt/gateway /opt/gateway
ENV PATH=/opt/gateway/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Runs as root by default, deliberately: the gateway must read the Docker socket, whose group ID
# differs from host to host (and is root on Docker Desktop), so a fixed non-root user would fail out
# of the box. A process that can reach that socket is root-equivalent on the host anyway; the real
# mitigation is the socket proxy (compose's socket-proxy profile, and the Swarm stack), which lets
# exactly the gateway's own calls through and runs this image as user 10001, read-only, without
# capabilities (README, "Deployment hardening").
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/health/live', timeout=2)"]
CMD ["object-gateway"]
