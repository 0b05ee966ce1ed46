# The CIFAR-10-GS CNN zoo on the GPU machine (issues 17 and 18): time the trainer's batching methods,
# build the Small-CNN-Zoo-sized zoo with the fastest one for as many epochs as fit the budget, train
# the accuracy predictors on it (5 seeds), and time the GMN's dense path against PyG on the conv graph.
#   bash scripts/device-cnn-zoo.sh start     copy the checkout to /tmp and start the job there (setsid)
#   bash scripts/device-cnn-zoo.sh wait S    wait up to S seconds, then pack what exists into $OUT
# Data in /tmp/wsdata (../shared/tools/stage-data-for-device cifar-10-batches-py). Chain the calls
# within 30 s so the machine and its /tmp stay.
set -uo pipefail
R=/tmp/cnnres
case "$1" in
start)
  rm -rf /tmp/wsb && cp -r . /tmp/wsb && cd /tmp/wsb || exit 1
  cat > /tmp/wsb/job.sh <<'JOB'
cd /tmp/wsb && source scripts/device-env.sh
export WSBENCH_DATA=/tmp/wsdata WSBENCH_CACHE=/tmp/wscache
R=/tmp/cnnres; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt
python3 benchmarks/cnn_zoo_build.py --budget-s "${ZOO_BUDGET_S:-480}" --out $R/cnn_zoo_step.json > $R/step.log 2>&1
rargs=""; for kv in $(grep '^RECIPE ' $R/step.log | cut -d' ' -f2-); do rargs="$rargs --recipe $kv"; done
echo "$rargs" > $R/recipe.txt
/usr/bin/time -v python3 -m wsbench zoo build --dataset cnn-cifar10gs $rargs > $R/zoo.log 2>&1
# The predictors: the small ones in one grid, the GMN (GPU-sized: 128 wide, 4 layers) in another, at once.
python3 -m wsbench grid --arch weight-stats --arch fn-mlp --arch flat-mlp --arch nfn-np --dataset cnn-cifar10gs \
  --seeds 5 $rargs --results $R/small --workers 2 --json > $R/grid-small.json 2> $R/grid-small.log &
python3 -m wsbench grid --arch gmn --dataset cnn-cifar10gs --seeds 5 $rargs --results $R/gmn --workers 3 \
  --set hidden_dim=128 --set depth=4 --set head_hidden=[256] --set batch_size=256 --set epochs=30 \
  --json > $R/grid-gmn.json 2> $R/grid-gmn.log &
wait
echo grids > $R/GRIDS
timeout 300 python3 benchmarks/gmn_throughput.py --devices cuda --network cnn --out $R/gmn_throughput_cnn.json \
  > $R/gmn_tp.log 2>&1
echo done > $R/DONE
JOB
  setsid bash /tmp/wsb/job.sh > /tmp/job.out 2>&1 < /dev/null &
  sleep 20; cat /tmp/job.out; ls /tmp/wsdata; cat $R/step.log 2>/dev/null ;;
wait)
  end=$((SECONDS + $2))
  while [ ! -f $R/DONE ] && [ $SECONDS -lt $end ]; do sleep 10; done
  cat /tmp/job.out; cat $R/step.log $R/recipe.txt 2>/dev/null
  grep -v "━" $R/zoo.log 2>/dev/null | tail -8
  for g in small gmn; do grep -v "━" $R/grid-$g.log 2>/dev/null | tail -4; done
  tail -5 $R/gmn_tp.log 2>/dev/null
  zoo=$(ls -d /tmp/wscache/zoos/cnn-cifar10gs-* 2>/dev/null | head -1)
  [ -n "$zoo" ] && cp "$zoo/manifest.json" $R/zoo-manifest.json
  # one archive (the machine returns at most 8 files): logs, timings, the runs and predictions tables
  (cd $R && tar -czf "$OUT/cnnres.tgz" --exclude='.*' --exclude='representations' --exclude='models' *)
  ls -la "$OUT" ;;
esac
