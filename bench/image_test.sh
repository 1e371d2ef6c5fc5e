#!/usr/bin/env bash
# Builds the Dockerfile with podman on a debootstrapped Debian bookworm base, runs `methods` and a tiny run in
# the container, packages it, builds the bundle image, runs its kit evaluation offline on a tiny `synth` dataset,
# checks metrics.csv / results.json and prints the timings. Needs root, podman buildah debootstrap runc and PyPI
# access (a CUDA torch: gigabytes). Not in .ci/run. Usage: make image-test
set -euo pipefail
cd "$(dirname "$0")/.."
work=${IMAGE_TEST_DIR:-/tmp/fewshot-image-test}
base=localhost/fewshot-base:bookworm
mkdir -p "$work/storage" "$work/runroot" "$work/out"
# overlay where the kernel has it (vfs copies the whole image for every layer: out of disk on a 6.6 GB image)
driver=vfs; grep -qw overlay /proc/filesystems && driver=overlay
cat > "$work/storage.conf" <<CONF
[storage]
driver = "$driver"
graphroot = "$work/storage"
runroot = "$work/runroot"
CONF
export CONTAINERS_STORAGE_CONF="$work/storage.conf"
podman=(podman --runtime runc --cgroup-manager cgroupfs --events-backend none)
limits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
offline=("${podman[@]}" run --rm --network none "${limits[@]}")  # a container without network

now() { date +%s.%N; }
t0=$(now)
if ! "${podman[@]}" image exists "$base"; then
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
    # the host CA bundle (this network inspects TLS): kept when the image installs ca-certificates
    mkdir -p "$work/rootfs/etc/ssl/certs" "$work/rootfs/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/local/share/ca-certificates/host-bundle.crt"
    mkdir -p "$work/rootfs/etc/pip" && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$work/rootfs/etc/pip.conf"
    tar -C "$work/rootfs" -c . | "${podman[@]}" import - "$base" >/dev/null
fi
t1=$(now)
"${podman[@]}" build --network host "${limits[@]}" --build-arg BASE_IMAGE="$base" -t localhost/fewshot-ad:test . 
t2=$(now)
"${offline[@]}" localhost/fewshot-ad:test methods
t3=$(now)
chmod 777 "$work/out"
"${offline[@]}" -v "$work/out:/runs" localhost/fewshot-ad:test run --shots 1 --seeds 42 --methods patchcore \
    --image-size 64 --out /runs/tiny
t4=$(now)
# the bundle image: package the tiny run, write a tiny dataset, build with BUNDLE (cached layers), evaluate offline
bundle=dist/image-test__patchcore.tar.gz
"${offline[@]}" -v "$work/out:/runs" localhost/fewshot-ad:test package /runs/tiny --method patchcore --dist /runs/dist
rm -rf "$work/out/loco"
"${offline[@]}" -v "$work/out:/runs" localhost/fewshot-ad:test synth --out /runs/loco --image-size 64
mkdir -p dist && cp "$work/out/dist/tiny__patchcore.tar.gz" "$bundle"
t5=$(now)
"${podman[@]}" build --network host "${limits[@]}" --build-arg BASE_IMAGE="$base" --build-arg BUNDLE="$bundle" \
    -t localhost/fewshot-ad:bundle-test .
t6=$(now)
rm -rf "$work/eval" && mkdir -p "$work/eval" && chmod 777 "$work/eval"
"${offline[@]}" -v "$work/out/loco:/data:ro" -v "$work/eval:/out" localhost/fewshot-ad:bundle-test --shots 1 2 --seeds 42
t7=$(now)
test -s "$work/eval/results.json" || { echo "image-test: the bundle image wrote no results.json" >&2; exit 1; }
python3 - "$work/eval" <<'CHECK'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
results = json.loads((out / "results.json").read_text())
assert set(results) == {"aufc", "normalized_aufc", "avg_image_score"}, results
rows = list(csv.reader(open(out / "metrics.csv", newline="")))
assert rows[0] == ["", "seed", "k_shot", "category", "image_score"], rows[0]
assert len(rows) == 1 + 3 * 2, f"{len(rows) - 1} rows: expected 3 categories x 2 k x 1 seed"
print(f"bundle image: results.json {results}; metrics.csv {len(rows) - 1} rows")
CHECK
size=$("${podman[@]}" image inspect localhost/fewshot-ad:test --format '{{.Size}}')
printf '| step | seconds |\n|---|---|\n| base image (debootstrap + import) | %.0f |\n| build | %.0f |\n| `methods` in the container | %.1f |\n| tiny run in the container (patchcore, 64 px, k=1, 1 seed, dataset generated) | %.1f |\n| package + synth in the container | %.1f |\n| bundle image build (cached harness layers) | %.1f |\n| bundle image kit evaluation (3 categories, 256 px, k=1 2, 1 seed, CPU) | %.1f |\n\nimage size: %.2f GB\n' \
    "$(awk "BEGIN{print $t1 - $t0}")" "$(awk "BEGIN{print $t2 - $t1}")" "$(awk "BEGIN{print $t3 - $t2}")" "$(awk "BEGIN{print $t4 - $t3}")" \
    "$(awk "BEGIN{print $t5 - $t4}")" "$(awk "BEGIN{print $t6 - $t5}")" "$(awk "BEGIN{print $t7 - $t6}")" "$(awk "BEGIN{print $size / 1e9}")"
