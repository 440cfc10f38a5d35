#!/usr/bin/env bash
# Start the LMT Spaces in a container: the gallery of every Space (LMT_SPACE=gallery, the default) or one Space
# (LMT_SPACE=clip, sam, ...). LMT_TINY=1 offers the offline tiny weights. The address comes from
# GRADIO_SERVER_NAME (default 0.0.0.0, every interface of the container) and GRADIO_SERVER_PORT (default 7860).
# Extra arguments are passed on to `lmt space` / `lmt gallery`, e.g. --share.
set -euo pipefail

space="${LMT_SPACE:-gallery}"
args=(--host "${GRADIO_SERVER_NAME:-0.0.0.0}" --port "${GRADIO_SERVER_PORT:-7860}")
if [ "${LMT_TINY:-0}" = "1" ]; then
  args+=(--tiny)
fi

if [ "$space" = "gallery" ]; then
  exec lmt gallery "${args[@]}" "$@"
fi
exec lmt space "$space" "${args[@]}" "$@"
