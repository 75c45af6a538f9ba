# Build .whl/ (git-ignored) for the device machine, which has no network and lacks ViZDoom and
# pyzmq: the pyzmq wheel as is, and ViZDoom as its wheel's files in tar.xz without the example
# scenarios (22 MB instead of 39), which scripts/gpu/common.sh unpacks into /tmp/site; and .whl-zmq/
# with the pyzmq wheel alone (speed.sh).
# Run here, in the repository root:  bash scripts/gpu/make_wheels.sh
set -euo pipefail
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
mkdir -p .whl
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    -d .whl pyzmq==27.3.0
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    -d "$tmp" vizdoom==1.3.2
(cd "$tmp" && mkdir site && cd site && unzip -q ../vizdoom-*.whl && rm -rf vizdoom/scenarios \
    && mkdir vizdoom/scenarios && tar cf - . | xz -9 -T0 > ../vizdoom-1.3.2-cp312-site.tar.xz)
mv "$tmp/vizdoom-1.3.2-cp312-site.tar.xz" .whl/
rm -rf "$tmp"
# .whl-zmq: the pyzmq wheel alone, for speed.sh beside the bundle's weights (WHEELS=.whl-zmq)
mkdir -p .whl-zmq && cp .whl/pyzmq-*.whl .whl-zmq/
grep -qx "/.whl-zmq/" .git/info/exclude 2>/dev/null || echo "/.whl-zmq/" >> .git/info/exclude
ls -la .whl .whl-zmq
