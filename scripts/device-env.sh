# Source from the repository root on a machine whose Python already has wsbench's dependencies
# (the GPU machine): makes `wsbench` importable, with its version metadata, without pip or a network.
#   source scripts/device-env.sh
_wsb_site=/tmp/wsbench-site
rm -rf "$_wsb_site" && mkdir -p "$_wsb_site"
ln -s "$PWD/harness/wsbench" "$_wsb_site/wsbench"
ln -s "$PWD/plugins/wsbench_plugins" "$_wsb_site/wsbench_plugins"
python3 - "$_wsb_site" <<'PY'
import sys, tomllib, pathlib
site = pathlib.Path(sys.argv[1])
meta = tomllib.loads(pathlib.Path("pyproject.toml").read_text())
project = meta["project"]
info = site / f"wsbench-{project['version']}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: wsbench\nVersion: {project['version']}\n")
eps = project.get("entry-points", {}).get("wsbench", {})
(info / "entry_points.txt").write_text("[wsbench]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
PY
export PYTHONPATH="$_wsb_site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
wsbench() { python3 -m wsbench "$@"; }
export -f wsbench
