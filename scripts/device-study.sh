# One dataset of the yeom2025 study on the GPU machine, as run for leaderboards/yeom2025.
#   bash scripts/device-study.sh DATASET SECONDS [WORKERS]
# Data in /tmp/wsdata (see ../shared/tools/stage-data-for-device). The study stops at SECONDS (one
# device call is at most 10 minutes); rerunning the same line on the still-warm machine resumes it.
# The results root minus representations (the large table) is packed into $OUT for the export.
ds=$1; secs=$2; workers=${3:-3}
source scripts/device-env.sh
export WSBENCH_DATA=/tmp/wsdata WSBENCH_CACHE=/tmp/wscache
# The worker processes are the study's own: an interrupted study stops them itself.
mkdir -p /tmp/study/logs
timeout -s INT "$secs" python3 -m wsbench study run yeom2025 --dataset "$ds" --out /tmp/study --workers "$workers" --export none 2>&1 | tee -a "/tmp/study/logs/$ds.log" | grep -v "━" | tail -5
echo "study rc=${PIPESTATUS[0]}"
grep "✓\|✗\|grid:" "/tmp/study/logs/$ds.log" | tail -3
tar -C /tmp/study -czf "$OUT/study-$ds.tgz" --exclude='*/.*' runs predictions similarity logs study-yeom2025.json
ls -la "$OUT"
