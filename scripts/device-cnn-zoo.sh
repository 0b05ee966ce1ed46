# The CIFAR-10-GS CNN zoo on the GPU machine (issues 17 and 18), one lease:
#   1. time the GMN's dense path against PyG on the conv graph at the GPU training config, on a quiet
#      GPU (it needs no data, so it runs while the data is being staged);
#   2. once /tmp/wsdata/READY exists, time the trainer's step variants and pick the recipe whose
#      epochs fit ZOO_BUDGET_S seconds of training (default 540);
#   3. build the Small-CNN-Zoo-sized zoo with it;
#   4. train the accuracy predictors on it, 5 seeds: the GMN (GPU-sized: 128 wide, 4 layers) in one
#      grid, the small models in another at the same time, then weight-stats with transform=asinh.
#   bash scripts/device-cnn-zoo.sh start     copy the checkout to /tmp and start the job there (setsid)
#   bash scripts/device-cnn-zoo.sh wait S    wait up to S seconds, then pack what exists into $OUT
# Data: ../shared/tools/stage-data-for-device cifar-10-batches-py, one call per chunk running its
# assemble.sh, the last one also `touch /tmp/wsdata/READY`. Chain the calls within 30 s so the machine
# and its /tmp stay.
set -uo pipefail
R=/tmp/cnnres
case "$1" in
start)
  rm -rf /tmp/wsb && mkdir -p /tmp/wsb && cp -r $(ls -A | grep -v '^.devdata$') /tmp/wsb/ && cd /tmp/wsb || exit 1
  cat > /tmp/wsb/job.sh <<'JOB'
cd /tmp/wsb && source scripts/device-env.sh
export WSBENCH_DATA=/tmp/wsdata WSBENCH_CACHE=/tmp/wscache
R=/tmp/cnnres; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt
GMN="--set hidden_dim=128 --set depth=4 --set head_hidden=[256] --set batch_size=256 --set epochs=30"
timeout 420 python3 benchmarks/gmn_throughput.py --devices cuda --network cnn --profile \
  --set hidden_dim=128 --set depth=4 --set head_hidden=[256] --set batch_size=256 \
  --out $R/gmn_throughput_cnn.json > $R/gmn_tp.log 2>&1
echo throughput > $R/TP
while [ ! -f /tmp/wsdata/READY ]; do sleep 2; done
python3 benchmarks/cnn_zoo_build.py --budget-s "${ZOO_BUDGET_S:-540}" --methods taps+compile,taps+compile+bf16 \
  --out $R/cnn_zoo_step.json > $R/step.log 2>&1
rargs=""; for kv in $(grep '^RECIPE ' $R/step.log | cut -d' ' -f2-); do rargs="$rargs --recipe $kv"; done
echo "$rargs" > $R/recipe.txt
/usr/bin/time -v python3 -m wsbench zoo build --dataset cnn-cifar10gs $rargs > $R/zoo.log 2>&1
(python3 -m wsbench grid --arch weight-stats --arch fn-mlp --arch flat-mlp --arch nfn-np --dataset cnn-cifar10gs \
   --seeds 5 $rargs --results $R/small --workers 2 --json > $R/grid-small.json 2> $R/grid-small.log
 python3 -m wsbench grid --arch weight-stats --dataset cnn-cifar10gs --seeds 5 $rargs --set transform=asinh \
   --results $R/asinh --workers 2 --json > $R/grid-asinh.json 2> $R/grid-asinh.log) &
python3 -m wsbench grid --arch gmn --dataset cnn-cifar10gs --seeds 5 $rargs --results $R/gmn --workers 5 \
  $GMN --json > $R/grid-gmn.json 2> $R/grid-gmn.log &
wait
echo done > $R/DONE
JOB
  setsid bash /tmp/wsb/job.sh > /tmp/job.out 2>&1 < /dev/null &
  sleep 5; cat /tmp/job.out ;;
wait)
  end=$((SECONDS + $2))
  while [ ! -f $R/DONE ] && [ $SECONDS -lt $end ]; do sleep 10; done
  cat /tmp/job.out; tail -8 $R/gmn_tp.log 2>/dev/null; cat $R/step.log $R/recipe.txt 2>/dev/null
  grep -v "━" $R/zoo.log 2>/dev/null | tail -8
  for g in small asinh gmn; do grep -v "━" $R/grid-$g.log 2>/dev/null | tail -3; done
  zoo=$(ls -d /tmp/wscache/zoos/cnn-cifar10gs-* 2>/dev/null | head -1)
  [ -n "$zoo" ] && cp "$zoo/manifest.json" $R/zoo-manifest.json && cp "$zoo/test_acc.npy" $R/zoo-test-acc.npy
  # one archive (the machine returns at most 8 files): logs, timings, the runs and predictions tables
  (cd $R && tar -czf "$OUT/cnnres.tgz" --exclude='.*' --exclude='representations' --exclude='models' *)
  ls -la "$OUT" ;;
esac
