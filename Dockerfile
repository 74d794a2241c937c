FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CORTEX_DATA_DIR=/data

RUN groupadd --gid 10001 cortex \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cortex \
    && mkdir /data \
    && chown 10001:10001 /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY cortex_core ./cortex_core
COPY cortex_tui ./cortex_tui
RUN pip install --no-cache-dir . \
    && rm -rf /src

WORKDIR /data
USER 10001:10001
ENTRYPOINT ["cortex"]
CMD ["worker"]
