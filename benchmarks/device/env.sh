# Source this at the start of every command on the GPU host (see docs/METHOD.md, "GPU host").
# - installs the carried wheels (.whl/: zeus, pydantic, typer, ...) once into /tmp/site,
# - appends any carried vLLM part (.device/vllm/NN/part.NN) to /tmp/vparts and unpacks vLLM
#   into /tmp/vsite once all three parts are there,
# - puts src/, /tmp/site and /tmp/vsite on PYTHONPATH (PYTHONPATH, not sys.path: vLLM starts
#   its engine in a subprocess).
# - the host's copy of the tree carries a stale .git: export TOKENJOULE_CODE_VERSION=<the commit
#   you run, `git rev-parse HEAD` here> in the same command, or cells record the wrong commit.
set -u
if [ -d .whl ] && [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.done || echo "wheel install failed"
fi
mkdir -p /tmp/vparts
for p in .device/vllm/*/part.*; do [ -f "$p" ] && cp --update=none "$p" /tmp/vparts/; done
if [ ! -f /tmp/vsite/.done ] && [ -f /tmp/vparts/part.00 ] && [ -f /tmp/vparts/part.01 ] && [ -f /tmp/vparts/part.02 ]; then
  mkdir -p /tmp/vsite && cat /tmp/vparts/part.* | xz -d | tar -C /tmp/vsite -xf - && touch /tmp/vsite/.done
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
[ -f /tmp/vsite/.done ] && export PYTHONPATH="$PYTHONPATH:/tmp/vsite"
export VLLM_CACHE_ROOT=/tmp/vllm-cache VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_WORKER_MULTIPROC_METHOD=spawn PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT"
echo "env: vparts=$(ls /tmp/vparts | tr '\n' ' ') vllm=$([ -f /tmp/vsite/.done ] && echo yes || echo no)"
