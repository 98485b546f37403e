"""Everything that touches MLX. Never imports Qt: the UI reaches it through app.ui.worker."""

import os

# MLX runs float32 matmuls and attention at TF32 precision (a 10-bit mantissa) by default where the
# hardware has matrix units: NVIDIA GPUs and Apple's M5 generation. The reference attention and the
# bf16 models' prefill compute in float32 precisely to keep key-quantization error from growing
# (attention scale 1.0 amplifies it), so full float32 unless the user set the variable.
os.environ.setdefault("MLX_ENABLE_TF32", "0")

