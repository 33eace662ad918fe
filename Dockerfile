# tracewatch: one image for every role (worker, api, topics init, fake judge, traffic).
#   docker build -t tracewatch:local .
#   docker run --rm tracewatch:local --help
#   docker run --rm -e TRACEWATCH_KAFKA_BOOTSTRAP=kafka:9092 tracewatch:local worker --scorer no_error
# docker-compose.yml builds it and runs each service with its own command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first (a layer that survives code changes), then the code. All dependencies
# have manylinux wheels: no compiler in the image.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY stream ./stream
COPY scorers ./scorers
COPY sinks ./sinks
RUN pip install --no-deps . && rm -rf /src

# The traffic generator of the compose `traffic` profile (not part of the package).
COPY deploy/traffic/generate.py /opt/tracewatch/traffic/generate.py

RUN useradd --system --uid 10001 --user-group --home-dir /home/tracewatch --create-home tracewatch
USER tracewatch
WORKDIR /home/tracewatch

# api, worker /metrics, fake judge
EXPOSE 8080 9108 8900
ENTRYPOINT ["tracewatch"]
CMD ["--help"]
