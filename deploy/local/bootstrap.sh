#!/usr/bin/env bash
# Installs what tracewatch needs on this machine, shared by `make demo`, `make test` and .ci/run.
#
#   deploy/local/bootstrap.sh          what the demo needs: redis-server, Java 17+, Maven; the project (pip -e .)
#   deploy/local/bootstrap.sh --test   ...and what tests need: kcat, prometheus, prometheus-alertmanager,
#                                      docker-compose; the project with dev extras; the MLflow test venv
#
# A quick no-op when everything is there. On Debian/Ubuntu as root it installs what is missing
# (apt-get, services not started); elsewhere it says exactly what to install and exits 1.
# PYTHON picks the interpreter (default python3); -q: silent unless it installs something or fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
test_deps=0
quiet=0
for arg in "$@"; do
    case $arg in
        --test) test_deps=1 ;;
        -q|--quiet) quiet=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "bootstrap: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done
say() { echo "bootstrap: $*"; }

# ---- system packages: (command, Debian package) -------------------------------------------
java_ok() {  # Kafka 4.x needs Java 17+
    command -v java >/dev/null 2>&1 || return 1
    local v
    v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    [[ -n $v && $v -ge 17 ]]
}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ((test_deps)); then
    command -v kcat           >/dev/null 2>&1 || missing+=(kcat)
    command -v promtool       >/dev/null 2>&1 || missing+=(prometheus)
    command -v amtool         >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi
command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3 python3-pip python3-venv)

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing (apt): ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # redis-server and prometheus start a system service on install; we run our own on
        # loopback, so service starts are forbidden during the install.
        policy=/usr/sbin/policy-rc.d
        own_policy=
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod +x "$policy"
            own_policy=$policy
            trap 'rm -f "$own_policy"' EXIT
        fi
        apt_log=$(mktemp)
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
            >"$apt_log" 2>&1; then
            tail -n 50 "$apt_log" >&2
            echo "bootstrap: apt-get failed installing: ${missing[*]}" >&2
            exit 1
        fi
        rm -f "$apt_log"
        if [[ -n $own_policy ]]; then
            rm -f "$own_policy"
            trap - EXIT
        fi
    else
        {
            echo "bootstrap: missing system packages; install them, then run this again:"
            echo "    Debian/Ubuntu (as root):  apt-get install --no-install-recommends ${missing[*]}"
            echo "    elsewhere, the same programs:"
            for pkg in "${missing[@]}"; do
                case $pkg in
                    redis-server) echo "      redis-server        Redis 7 (e.g. brew install redis)" ;;
                    openjdk-17-jre-headless) echo "      java                a Java 17+ runtime (e.g. brew install openjdk@17)" ;;
                    maven) echo "      mvn                 Apache Maven (e.g. brew install maven)" ;;
                    kcat) echo "      kcat                kcat (e.g. brew install kcat)" ;;
                    prometheus) echo "      promtool            Prometheus 2.x (e.g. brew install prometheus)" ;;
                    prometheus-alertmanager) echo "      amtool              Alertmanager (e.g. brew install alertmanager)" ;;
                    docker-compose) echo "      docker-compose      Docker Compose v1 CLI (tests only parse/validate the file)" ;;
                    python3) echo "      $PYTHON             Python 3.11+ with pip and venv" ;;
                esac
            done
            [[ $(id -u) -eq 0 ]] || echo "    (or run as root on Debian/Ubuntu and this script installs them)"
        } >&2
        exit 1
    fi
fi

# ---- Python: the project (editable), with dev extras for tests ------------------------------
extra=""
((test_deps)) && extra="dev"
# Fast check: this checkout is what `import stream` loads, and every requirement of pyproject
# (and of the extra) is installed (names only, not versions: pip settles versions).
if ! "$PYTHON" -I - "$extra" <<'PY' >/dev/null 2>&1  # -I: `stream` must resolve without the cwd
import importlib.metadata as md, importlib.util, pathlib, re, sys, tomllib
extra = sys.argv[1]
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
reqs = list(project["dependencies"]) + (list(project["optional-dependencies"][extra]) if extra else [])
md.distribution(project["name"])
spec = importlib.util.find_spec("stream")
assert spec is not None and spec.origin is not None
assert pathlib.Path(spec.origin).resolve().parent.parent == pathlib.Path.cwd().resolve()
for req in reqs:
    md.distribution(re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0])
PY
then
    target=".${extra:+[$extra]}"
    say "installing the project: $PYTHON -m pip install -e '$target'"
    if ! "$PYTHON" -m pip install --disable-pip-version-check --progress-bar off -q -e "$target"; then
        {
            echo "bootstrap: pip could not install the project. Use a virtual environment, then run this again:"
            echo "    $PYTHON -m venv .venv && . .venv/bin/activate && pip install -e '$target'"
        } >&2
        exit 1
    fi
fi

# ---- tests: the private MLflow venv (tests run MLflow beside tracewatch, never inside it) ------
mlflow_venv_ready() {  # quick: the venv's python finds mlflow (tests/mlflow_venv.py imports it, ~5 s)
    [[ -n ${TRACEWATCH_MLFLOW_PYTHON:-} ]] && return 0
    local py
    py=$("$PYTHON" -c 'import sys; sys.path.insert(0, "tests"); import mlflow_venv; print(mlflow_venv.VENV / "bin" / "python")') \
        || return 1
    [[ -x $py ]] && "$py" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("mlflow", "opentelemetry.exporter.otlp.proto.http", "opentelemetry.exporter.otlp.proto.grpc")))' 2>/dev/null
}
if ((test_deps)) && ! mlflow_venv_ready; then
    say "building the MLflow test venv: $PYTHON tests/mlflow_venv.py"
    if ! mlflow_py=$("$PYTHON" tests/mlflow_venv.py); then
        echo "bootstrap: could not build the MLflow test venv (python3 tests/mlflow_venv.py)" >&2
        exit 1
    fi
    [[ $mlflow_py == None ]] && { echo "bootstrap: the MLflow test venv has no mlflow" >&2; exit 1; }
fi
((quiet)) || say "ready${extra:+ (tests)}: system packages, the project${extra:+ with dev extras, the MLflow test venv}"
