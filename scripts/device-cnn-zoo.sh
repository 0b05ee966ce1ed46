# The CIFAR-10-GS CNN zoo on the GPU machine (issue 17's targets): build the Small-CNN-Zoo-sized zoo
# with the dataset's GPU recipe, then train the accuracy predictors on it.
#   bash scripts/device-cnn-zoo.sh start     copy the checkout to /tmp and start the job there (setsid)
#   bash scripts/device-cnn-zoo.sh wait S    wait up to S seconds, then pack what exists into $OUT
# Data in /tmp/wsdata (../shared/tools/stage-data-for-device cifar-10-batches-py). Chain the calls
# within 30 s so the machine and its /tmp stay.
set -uo pipefail
case "$1" in
start)
  rm -rf /tmp/wsb && cp -r . /tmp/wsb && cd /tmp/wsb || exit 1
  cat > /tmp/wsb/job.sh <<'JOB'
cd /tmp/wsb && source scripts/device-env.sh
export WSBENCH_DATA=/tmp/wsdata WSBENCH_CACHE=/tmp/wscache
R=/tmp/cnnres; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt
/usr/bin/time -v python3 -m wsbench zoo build --dataset cnn-cifar10gs > $R/zoo.log 2>&1
python3 -m wsbench grid --arch weight-stats --arch fn-mlp --arch flat-mlp --dataset cnn-cifar10gs --seeds 2 \
  --results $R --json > $R/grid.json 2> $R/grid.log
echo done > $R/DONE
JOB
  setsid bash /tmp/wsb/job.sh > /tmp/job.out 2>&1 < /dev/null &
  sleep 5; cat /tmp/job.out; ls /tmp/wsdata ;;
wait)
  end=$((SECONDS + $2))
  while [ ! -f /tmp/cnnres/DONE ] && [ $SECONDS -lt $end ]; do sleep 10; done
  R=/tmp/cnnres
  grep -v "━" $R/zoo.log | tail -12; tail -3 $R/grid.log $R/grid-nfn.log 2>/dev/null | grep -v "━"
  cp $R/zoo.log $R/gpu.txt "$OUT"/ 2>/dev/null
  cp $R/grid*.json "$OUT"/ 2>/dev/null
  zoo=$(ls -d /tmp/wscache/zoos/cnn-cifar10gs-* 2>/dev/null | head -1)
  [ -n "$zoo" ] && cp "$zoo/manifest.json" "$OUT/zoo-manifest.json"
  [ -d $R/runs ] && tar -C $R -czf "$OUT/cnn-results.tgz" runs predictions
  ls -la "$OUT" ;;
esac
