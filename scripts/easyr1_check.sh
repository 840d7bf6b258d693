#!/usr/bin/env bash
# scripts/easyr1_check.sh EASYR1_SRC [VENV] [-- CHECK_ARGS...]
#
# Checks tvr-gym's EasyR1 export and batch reward against EasyR1's own dataset, reward and config
# loaders, at the commit checked out in EASYR1_SRC (a git work tree of hiyouga/EasyR1):
#
#   git clone https://github.com/hiyouga/EasyR1 ../EasyR1
#   git -C ../EasyR1 checkout b44b311b669bf1fd1aa2fc36f2251482ba33cb16
#   bash scripts/easyr1_check.sh ../EasyR1            # builds .venv-easyr1 once, then runs the check
#
# EasyR1 pins transformers 4.x and tvr-gym's [train] extra transformers 5.x, so the check runs in a
# venv of its own (VENV, default .venv-easyr1 in this repository). The venv gets the part of EasyR1's
# requirements.txt that its dataset, reward and config modules import (not vllm, flash-attn,
# liger-kernel, peft, accelerate, wandb, mathruler or pylatexenc, which only its GPU workers and
# example rewards import), torch and torchvision (qwen-vl-utils imports torchvision), EasyR1 itself
# (`pip install --no-deps -e EASYR1_SRC`) and tvr-gym (`pip install -e .[data]`). A second run with the
# same EasyR1 commit and the same requirements reuses the venv. Only pip uses the network.
# Arguments after `--` go to scripts/easyr1_check.py (--help lists them). Not part of pytest: CI has no
# copy of EasyR1's source.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 && "$1" != -h && "$1" != --help ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC_ARG="$1"; shift
VENV="$REPO/.venv-easyr1"
if [[ $# -ge 1 && "$1" != -- ]]; then VENV="$1"; shift; fi
[[ $# -ge 1 && "$1" == -- ]] && shift
PYTHON="${PYTHON:-python3}"

[[ -d "$SRC_ARG" ]] || { echo "easyr1_check: EASYR1_SRC: no directory $SRC_ARG" >&2; exit 2; }
SRC="$(cd "$SRC_ARG" && pwd)"
for f in requirements.txt setup.py verl/utils/dataset.py verl/workers/reward/function.py verl/trainer/config.py; do
    [[ -f "$SRC/$f" ]] || { echo "easyr1_check: $SRC has no $f: not an EasyR1 work tree (clone it, see the top of $0)" >&2; exit 2; }
done
COMMIT="$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
DIRTY=""
if [[ "$COMMIT" != unknown ]] && [[ -n "$(git -C "$SRC" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    DIRTY="+local-changes"
fi

# EasyR1's requirements, minus what only its GPU workers and example rewards import; extras dropped
# (ray[default] -> ray: only `import ray` is needed). Specifiers are EasyR1's own, read at this commit.
GPU_ONLY='^(vllm|flash-attn|flash_attn|liger-kernel|liger_kernel|peft|accelerate|wandb|mathruler|pylatexenc)([^A-Za-z0-9_.-]|$)'
mapfile -t REQS < <(grep -vE '^\s*(#|$)' "$SRC/requirements.txt" | sed 's/\s*#.*//; s/\[[^]]*\]//' | grep -viE "$GPU_ONLY")
# vllm brings torch on a GPU machine; qwen-vl-utils imports torchvision. omegaconf 2.4 (TupleConfig)
# rejects two loggers in EasyR1's `trainer.logger: Tuple[str]`, its own examples/config.yaml included.
EXTRA=("torch" "torchvision" "omegaconf<2.4")
STAMP_TEXT="easyr1=$COMMIT$DIRTY
python=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
reqs=${REQS[*]} ${EXTRA[*]}
tvr-gym=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
STAMP="$VENV/.easyr1-check-installed"

T0=$(date +%s)
if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]] && [[ -x "$VENV/bin/python" ]]; then
    echo "easyr1_check: reusing $VENV (EasyR1 $COMMIT$DIRTY)"
else
    echo "easyr1_check: building $VENV for EasyR1 $COMMIT$DIRTY"
    rm -f "$STAMP"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
    "${PIP[@]}" install -q --upgrade pip
    echo "  pip install ${REQS[*]} ${EXTRA[*]}"
    "${PIP[@]}" install -q "${REQS[@]}" "${EXTRA[@]}"
    echo "  pip install --no-deps -e $SRC"
    "${PIP[@]}" install -q --no-deps -e "$SRC"
    echo "  pip install -e $REPO[data]"
    "${PIP[@]}" install -q -e "$REPO[data]"
    if ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
        echo "easyr1_check: torch and torchvision do not load together in $VENV; install a matching pair" >&2
        echo "  (e.g. CPU builds: $VENV/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu)" >&2
        exit 1
    fi
    printf '%s' "$STAMP_TEXT" > "$STAMP"
    echo "easyr1_check: venv built in $(( $(date +%s) - T0 )) s, $(du -sh "$VENV" | cut -f1)"
fi

cd "$REPO"
exec "$VENV/bin/python" "$REPO/scripts/easyr1_check.py" --easyr1 "$SRC" "$@"
