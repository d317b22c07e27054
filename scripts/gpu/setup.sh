# Sourced by continue.sh and study.sh on the GPU machine: the Python packages it lacks (wheels in
# .whl/, carried with the call), the training data unpacked to FLAC in $DATA, and $MIX, the
# data spec over it. Needs PY, DATA, MODE.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -d .whl ] && ! $PY -c "import soundfile, soxr, pesq, pystoi" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
fi
if [ "$MODE" = gpu ]; then
  $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 5
fi
[ -d "$DATA/trainpack/speech" ] || $PY scripts/gpu/unpack_data.py .gpu/data "$DATA" || exit 4
MIX="mix:$DATA/trainpack/speech+$DATA/trainpack-extra/speech,$DATA/trainpack/noise+$DATA/trainpack-extra/noise"
