# The CIFAR-10-GS CNN zoo on the GPU machine (issues 17 and 18), one lease:
#   1. check the GMN's CUDA-graph training against eager (tests/test_gmn_gpu.py), then time its dense
#      path, compiled (compile=cuda) and replayed as CUDA graphs (cuda-graphs), against PyG on the conv
#      graph at the GPU training config, on a quiet GPU (no data needed: it runs while data is staged);
#   2. once /tmp/wsdata/READY exists, build the Small-CNN-Zoo-sized zoo with the dataset's GPU recipe
#      (benchmarks/cnn_zoo_build.py chose it; the build's wall time is the figure);
#   3. train the accuracy predictors on it, 5 seeds, all at once on the one GPU: the GMN (GPU-sized:
#      128 wide, 4 layers; compiled the faster way of step 1), nfn-np, the small models then
#      weight-stats with transform=asinh, and one seed each of a wider GMN and of 60 epochs.
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
python3 -m pytest -q -p no:cacheprovider tests/test_gmn_gpu.py > $R/gpu_test.log 2>&1
BENCH="--set hidden_dim=128 --set depth=4 --set head_hidden=[256] --set batch_size=256"
for mode in cuda cuda-graphs; do
  timeout 300 python3 benchmarks/gmn_throughput.py --devices cuda --network cnn --profile $BENCH --set compile=$mode \
    --out $R/gmn_throughput_cnn_$mode.json > $R/gmn_tp_$mode.log 2>&1
done
# the grid's GMN compiles the way that trained faster here
MODE=$(python3 -c "import json,sys; r={m: json.load(open(f'$R/gmn_throughput_cnn_{m}.json'))['results']['cuda']['dense_samples_per_s'] for m in ('cuda','cuda-graphs')}; print(max(r, key=r.get))" 2>/dev/null || echo cuda)
echo "$MODE" > $R/TP
while [ ! -f /tmp/wsdata/READY ]; do sleep 2; done
/usr/bin/time -v python3 -m wsbench zoo build --dataset cnn-cifar10gs > $R/zoo.log 2>&1
GMN="$BENCH --set epochs=30 --set compile=$MODE"
(python3 -m wsbench grid --arch weight-stats --arch fn-mlp --arch flat-mlp --dataset cnn-cifar10gs --seeds 5 \
   --results $R/small --workers 3 --json > $R/grid-small.json 2> $R/grid-small.log
 python3 -m wsbench grid --arch weight-stats --dataset cnn-cifar10gs --seeds 5 --set transform=asinh \
   --results $R/asinh --workers 3 --json > $R/grid-asinh.json 2> $R/grid-asinh.log) &
python3 -m wsbench grid --arch nfn-np --dataset cnn-cifar10gs --seeds 5 --results $R/nfn --workers 5 \
  --json > $R/grid-nfn.json 2> $R/grid-nfn.log &
python3 -m wsbench grid --arch gmn --dataset cnn-cifar10gs --seeds 5 --results $R/gmn --workers 5 \
  $GMN --json > $R/grid-gmn.json 2> $R/grid-gmn.log &
# one seed each of a wider GMN and of twice the epochs: does the GMN's tau grow with capacity or training?
python3 -m wsbench grid --arch gmn --dataset cnn-cifar10gs --seeds 1 --results $R/gmn256 --workers 1 \
  $GMN --set hidden_dim=256 --json > $R/grid-gmn256.json 2> $R/grid-gmn256.log &
python3 -m wsbench grid --arch gmn --dataset cnn-cifar10gs --seeds 1 --results $R/gmn60 --workers 1 \
  $GMN --set epochs=60 --json > $R/grid-gmn60.json 2> $R/grid-gmn60.log &
wait
echo done > $R/DONE
JOB
  setsid bash /tmp/wsb/job.sh > /tmp/job.out 2>&1 < /dev/null &
  sleep 5; cat /tmp/job.out ;;
wait)
  end=$((SECONDS + $2))
  while [ ! -f $R/DONE ] && [ $SECONDS -lt $end ]; do sleep 10; done
  cat /tmp/job.out; tail -3 $R/gpu_test.log 2>/dev/null; tail -8 $R/gmn_tp_*.log 2>/dev/null; cat $R/TP 2>/dev/null
  grep -v "━" $R/zoo.log 2>/dev/null | tail -8
  for g in small asinh nfn gmn gmn256 gmn60; do grep -v "━" $R/grid-$g.log 2>/dev/null | tail -3; done
  zoo=$(ls -d /tmp/wscache/zoos/cnn-cifar10gs-* 2>/dev/null | head -1)
  [ -n "$zoo" ] && cp "$zoo/manifest.json" $R/zoo-manifest.json && cp "$zoo/test_acc.npy" $R/zoo-test-acc.npy
  # one archive (the machine returns at most 8 files): logs, timings, the runs and predictions tables
  (cd $R && tar -czf "$OUT/cnnres.tgz" --exclude='.*' --exclude='representations' --exclude='models' *)
  ls -la "$OUT" ;;
esac
