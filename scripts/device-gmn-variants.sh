# GMN variants on one dataset's full zoo on the GPU machine, one process per cell, all at once
# (one GMN leaves most of the GPU idle), as run for benchmarks/results/gmn_accuracy_h200.json.
# On the H200, 3 cells at once (30 epochs, MNIST) took about 200 s each; 7 at once had not finished
# after 8 minutes, so give it at most 3 or 4 cells per 10-minute call.
#   bash scripts/device-gmn-variants.sh DATASET SECONDS "SEED[:key=value key=value]" ...
# Data in /tmp/wsdata (../shared/tools/stage-data-for-device); the zoo is fitted first unless
# cached in /tmp/wscache. Cells still running at SECONDS are stopped and lost (no checkpoints);
# finished ones stay in /tmp/variants, so rerunning on the still-warm machine skips them.
# The runs table and logs are packed into $OUT.
ds=$1; secs=$2; shift 2
end=$((SECONDS + secs))
source scripts/device-env.sh
export WSBENCH_DATA=/tmp/wsdata WSBENCH_CACHE=/tmp/wscache
python3 -m wsbench inrs build --dataset "$ds" 2>&1 | grep -v "━" | tail -2
mkdir -p /tmp/variants/logs
for cell in "$@"; do
  seed=${cell%%:*}; sets=(); [ "$cell" = "$seed" ] || for kv in ${cell#*:}; do sets+=(--set "$kv"); done
  name=$(echo "$cell" | tr ' :=,/' '_____')
  timeout -s INT $((end - SECONDS)) python3 -m wsbench grid --arch gmn --dataset "$ds" --seeds "$seed," \
    --out /tmp/variants "${sets[@]}" > "/tmp/variants/logs/$name.log" 2>&1 &
done
wait
for f in /tmp/variants/logs/*.log; do echo "== $f"; grep -v "━" "$f" | tail -2; done
tar -C /tmp/variants -czf "$OUT/variants-$ds.tgz" runs logs
