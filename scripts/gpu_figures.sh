#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one command, in under 8 minutes on one H100 or
# H200, without network:
#   bash scripts/gpu_figures.sh                 # on the GPU machine
#   bash scripts/gpu_figures.sh --dry-run       # every step at tiny sizes on the CPU (or
#                                               # GPU_FIGURES_CPU=1): checks the plumbing
#   bash scripts/gpu_figures.sh --commands      # print each step's limit and overrides
# Steps (each an mmexp-bench run under its own time limit; a failing step is logged and the
# next one runs):
#   throughput_default  mmexp / plain loop, default config, trainer=gpu (bf16)
#   throughput_batch2   the same at data.batch_size=2, where the framework's cost shows most
#   throughput_frozen   frozen ViT-S/16 + MiniLM-size towers, fusion + head trained
#   dual_encoder        ViT-B/16 + BERT-base dual encoder, bf16 + torch.compile: samples/s,
#                       peak memory, MFU
#   cache_speedup       frozen-tower fusion ablation without, then with the feature cache
# Writes to $OUT (else outputs/gpu_figures/): gpu_figures.json (every figure, device, date,
# torch and CUDA versions, commit), gpu_figures.md (a block for docs/benchmarks.md) and
# logs/<step>.log, 8 files in all. Missing Python packages are installed from scripts/wheels/
# (filled by scripts/fetch_wheels.sh where PyPI is reachable) into a folder of their own; the
# installed torch is never touched. Text towers are written with random weights (no
# download). On a copy without .git, MMEXP_GIT_SHA=<sha> names the commit in the results.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$repo/outputs/gpu_figures}
work=${GPU_FIGURES_WORK:-${TMPDIR:-/tmp}/mmexp_gpu_figures}
python=${PYTHON:-python3}
# Seconds for setup and all steps; each step's limit is cut to what is left of it.
budget=${GPU_FIGURES_BUDGET_S:-470}
cpu=${GPU_FIGURES_CPU:-0}
list_only=0
for arg in "$@"; do
    case $arg in
        --dry-run) cpu=1 ;;
        --commands) list_only=1 ;;
        *) echo "gpu_figures: unknown argument $arg (use --dry-run or --commands)" >&2 && exit 2 ;;
    esac
done
start=$(date +%s)
towers=$work/towers
frozen_cache=$work/throughput_frozen_cache
setup_log=$out/logs/setup.log

# --- sizes ---------------------------------------------------------------------------------
if [ "$cpu" = 1 ]; then
    mode=cpu
    device=(trainer=cpu)
    small=(data.num_train=64 data.num_val=16 data.num_test=16)
    batch=16
    timing=(bench.throughput.warmup_steps=1 bench.throughput.steps=2 bench.throughput.repeats=2
        bench.throughput.distinct_batches=2)
    vit=(model.encoders.image.name=vit_tiny_patch16_224 model.encoders.image.img_size=32
        +model.encoders.image.model_kwargs.depth=2)
    text_sizes=(tiny) frozen_text=$towers/tiny dual_text=$towers/tiny
    dual=(data.batch_size=8 data.num_train=32 data.num_val=16 data.num_test=16
        model.compile=false bench.throughput.warmup_steps=1 bench.throughput.steps=2
        bench.throughput.repeats=1 bench.throughput.distinct_batches=2)
    dual_vit=("${vit[@]}")
    cache=("${small[@]}" data.batch_size=16 trainer.max_epochs=1
        "bench.feature_cache.strategies=[concat,late]")
    limits=(120 120 120 120 240)
else
    mode=gpu
    device=(trainer=gpu)
    small=()
    batch=64
    timing=(bench.throughput.warmup_steps=20 bench.throughput.steps=200
        bench.throughput.repeats=5 bench.throughput.distinct_batches=4)
    vit=()
    text_sizes=(base minilm) frozen_text=$towers/minilm dual_text=$towers/base
    # 4 distinct batches of 256: every caption length is seen (and compiled for) in warm-up;
    # one repeat, since each loop compiles its own copy of the model
    dual=(data.batch_size=256 data.num_train=1024 data.num_val=256 data.num_test=256
        model.compile=true model.optimizer.fused=true bench.throughput.warmup_steps=10
        bench.throughput.steps=40 bench.throughput.repeats=1 bench.throughput.distinct_batches=4)
    dual_vit=(model.encoders.image.name=vit_base_patch16_224)
    cache=(trainer.max_epochs=3 data.num_workers=4 data.persistent_workers=true
        "bench.feature_cache.strategies=[concat,gated,late,attention]")
    limits=(50 40 50 160 120)
fi
# The frozen ViT-S/16 + MiniLM ablation (conf/experiment/frozen_fusion_ablation.yaml) with
# random weights: the MiniLM-size tower written by the setup stands in for packaged MiniLM.
frozen=(experiment=frozen_fusion_ablation hydra.mode=RUN model.encoders.image.pretrained=false
    model/encoders/text=hf "model.encoders.text.name_or_path=$frozen_text"
    model.encoders.text.pooling=mean model.encoders.text.freeze=frozen "${vit[@]}")

say() { echo "gpu_figures: $*" | tee -a "$setup_log"; }

# run_step NAME LIMIT_S OVERRIDES...: one mmexp-bench run, its log, its line in steps.tsv.
run_step() {
    local name=$1 limit=$2
    shift 2
    if [ "$list_only" = 1 ]; then
        printf '%s\t%s' "$name" "$limit" && printf '\t%s' "$@" && echo
        return
    fi
    local left=$((budget - ($(date +%s) - start)))
    if [ "$left" -lt 15 ]; then
        say "$name skipped: the ${budget} s budget is spent"
        printf '%s\tskipped\t-\t0\t0\n' "$name" >>"$work/steps.tsv"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local log="$out/logs/$name.log" begun=$SECONDS rc status
    say "$name (limit ${limit} s)"
    rm -rf "${work:?}/$name"
    timeout --kill-after=5 "$limit" "$python" -m mmexp.bench.cli "$@" \
        "hydra.run.dir=$work/$name" "bench.output=$work/$name/bench.json" >"$log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=failed ;;
    esac
    say "$name: $status (exit $rc) after $((SECONDS - begun)) s"
    [ "$status" = ok ] || tail -n 5 "$log" | tee -a "$setup_log"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - begun))" "$limit" \
        >>"$work/steps.tsv"
}

# Device check, missing packages, text towers; an unusable device ends the script.
setup() {
    mkdir -p "$out/logs" "$work"
    : >"$setup_log"
    rm -rf "$work/steps.tsv" "$frozen_cache"
    export PYTHONPATH="$repo:$work/site${PYTHONPATH:+:$PYTHONPATH}"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
    export TOKENIZERS_PARALLELISM=false MMEXP_DATA_DIR="$work/data"
    MMEXP_GIT_SHA=${MMEXP_GIT_SHA:-$(git -C "$repo" rev-parse HEAD 2>/dev/null)}
    export MMEXP_GIT_SHA

    if [ "$mode" = cpu ]; then
        say "CPU mode: every step at tiny sizes, no figures"
    else
        nvidia-smi -L 2>&1 | tee -a "$setup_log"
        if ! "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
            say "no CUDA device visible to $python's torch; for a CPU check use --dry-run"
            exit 1
        fi
    fi

    # Only what is missing, from scripts/wheels, into a folder of its own; --no-deps since
    # the dependencies are listed too and torch's stack must stay as it is.
    local missing pins=() name pin
    missing=$("$python" - "$repo/scripts/gpu_packages.txt" <<'EOF'
import sys
from importlib import metadata

for line in open(sys.argv[1]):
    name = line.split("#")[0].strip()
    if name:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            print(name)
EOF
    )
    if [ -n "$missing" ]; then
        say "installing from scripts/wheels: $(echo $missing)"
        for name in $missing; do
            pin=$(grep -i "^${name}==" "$repo/scripts/wheels/requirements.txt" 2>/dev/null)
            pins+=("${pin:-$name}")
        done
        "$python" -m pip --isolated install --quiet --no-index --no-deps --no-compile \
            --find-links "$repo/scripts/wheels" --target "$work/site" --upgrade "${pins[@]}" \
            >>"$setup_log" 2>&1 || say "pip install failed (scripts/fetch_wheels.sh fills wheels)"
    fi
    "$python" -m pip check >>"$setup_log" 2>&1 || say "pip check reports conflicts (setup.log)"
    if ! "$python" - >>"$setup_log" 2>&1 <<'EOF'; then
from importlib import metadata

import hydra, omegaconf, pytorch_lightning, rich, safetensors, timm, torch, transformers  # noqa
import mmexp.bench.cli  # noqa

names = ("torch", "pytorch-lightning", "hydra-core", "timm", "transformers", "torchmetrics")
print("imports ok:", ", ".join(f"{n} {metadata.version(n)}" for n in names))
EOF
        say "the benchmark's imports fail (see setup.log); the steps will fail too"
    fi

    local size
    for size in "${text_sizes[@]}"; do
        [ -f "$towers/$size/config.json" ] && continue
        "$python" "$repo/scripts/gpu_figures_towers.py" "$size" "$towers/$size" \
            >>"$setup_log" 2>&1 || say "writing the $size text tower failed"
    done
}

[ "$list_only" = 1 ] || setup

# --- steps ---------------------------------------------------------------------------------
run_step throughput_default "${limits[0]}" "${device[@]}" "${small[@]}" "${timing[@]}" \
    "data.batch_size=$batch" bench.suites=[throughput]
run_step throughput_batch2 "${limits[1]}" "${device[@]}" "${small[@]}" "${timing[@]}" \
    data.batch_size=2 bench.suites=[throughput]
run_step throughput_frozen "${limits[2]}" "${device[@]}" "${frozen[@]}" "${small[@]}" \
    "${timing[@]}" "data.batch_size=$batch" feature_cache.enabled=true \
    "feature_cache.dir=$frozen_cache" bench.suites=[throughput]
run_step dual_encoder "${limits[3]}" "${device[@]}" objective=contrastive \
    model/encoders/image=timm model.encoders.image.pretrained=false "${dual_vit[@]}" \
    model/encoders/text=hf "model.encoders.text.name_or_path=$dual_text" "${dual[@]}" \
    bench.suites=[throughput]
run_step cache_speedup "${limits[4]}" "${device[@]}" "${frozen[@]}" "${cache[@]}" \
    bench.suites=[feature_cache]
[ "$list_only" = 1 ] && exit 0

# --- one JSON, one Markdown block ----------------------------------------------------------
"$python" "$repo/scripts/gpu_figures_report.py" --work "$work" --out "$out" --mode "$mode" \
    --frozen-cache "$frozen_cache" --started "$start" 2>>"$setup_log" \
    || say "the report failed (see setup.log)"
say "done in $(($(date +%s) - start)) s: $out/gpu_figures.json, $out/gpu_figures.md"
