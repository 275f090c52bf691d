# The wheel stages of the H100 run scripts (runs 25 and 26), sourced: `. scripts/gpu-wheels.sh "$1"`.
# Sets Q (quack-kernels and the CUTLASS DSL, under a site-packages folder) and F (FlashAttention-4);
# for PART stage1, stage2 or install it does that stage and exits, for any other part it returns.
#   stage1   carry .gpu7: the first part of the CUTLASS DSL cu13 wheel, copied to /tmp/w
#   stage2   carry .gpu12: its second part (since run 27: three parts of 31 MB, so that each call's
#            carry and the tracked tree stay under 64 MiB; runs 25 and 26 carried two of 50 MB)
#   install  carry .gpu8 .gpu9: the last part, fair-esm and quack; join, check, install; FA4 apart
Q=/tmp/q/site-packages
F=/tmp/fa4/site-packages
case "${1:-}" in
stage1) mkdir -p /tmp/w && cp .gpu7/* /tmp/w/ && nvidia-smi -L; exit ;;
stage2) cp .gpu12/* /tmp/w/; exit ;;
install)
  cp .gpu8/* /tmp/w/ && cat /tmp/w/cu13.part.* > /tmp/w/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl \
    && (cd / && sha256sum -c /tmp/w/cu13.sha) || exit 3
  # under a site-packages folder: quack fingerprints epilogue code down to the first function outside one
  python3 -m pip install -q --no-index --no-deps --no-compile --target $Q /tmp/w/*.whl 2>&1 | tail -2
  python3 -m pip install -q --no-index --no-deps --no-compile --target $F .gpu9/*.whl 2>&1 | tail -2
  exit ;;
esac
