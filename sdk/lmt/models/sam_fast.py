"""A faster SAM image encoder for CPU inference: transformers' own ``image_embeddings``, bit for bit, from the
model's own parameters.

>>> from lmt.models.sam_fast import encode_images, fast_image_encoder
>>> embeddings = encode_images(model, pixel_values)      # doctest: +SKIP  (what the SAM task call runs)
>>> embeddings = fast_image_encoder(model)(pixel_values)  # doctest: +SKIP  (the fast path, or an error saying why not)

It takes a transformers ``SamModel`` or ``SamVisionEncoder`` of any size (ViT-B/L/H, the tiny variant) and reads
its parameters in place: nothing is copied, and a fine-tuned model is encoded as it is now. It runs the same kernels
as transformers' default (SDPA) attention path, and the embeddings are equal bit for bit (checked by the tests on
small configurations and by the benchmark on ViT-B at 1024 px; within 2e-6, relative, of transformers' eager
attention). Inference only: no autograd, no dropout, no attention maps.

Measured (``benchmarks/results/sam_encoder.json``: SAM ViT-B at 1024 px, random weights, 2 CPU threads, idle
machine): transformers took 21.0 s per image with its eager attention (4.88 M minor page faults per call) and
15.0 s with its default SDPA attention (2.24 M); this encoder took 9.7 s (76 k): 2.21x and 1.56x faster (medians
of per-round ratios), at 97 GFLOP/s, 76% of the fp32 matmul ceiling measured in the same run (127 GFLOP/s),
against 35% and 50%. Of the 942 GFLOP per image, 696 are the linear layers' matmuls, which run no faster here than
in transformers: even at the matmul ceiling the encoder would take 7.4 s.

Why it is faster:

- **No 4096 x 4096 x heads temporaries.** Each of the four global-attention layers of ViT-B attends over 64 x 64 =
  4096 tokens with a decomposed relative-position bias. transformers sums the bias of all 12 heads into one
  (12, 4096, 4096) float32 tensor, 805 MB, on every call (its eager attention also materialises the attention
  matrix and its softmax, as large). Here the bias is built one head at a time into one reused 64 MB buffer and
  handed to the same SDPA kernel: the same numbers, without allocating and faulting in 805 MB per layer.
- **No page faults from temporaries.** glibc returns any freed block above its mmap threshold (at most 32 MB) to
  the OS, so every large temporary of every layer (qkv, biases, the MLP's hidden activations) is faulted in and
  zeroed again on its next use. Here the large buffers are allocated once per call and reused by every layer
  (``out=``, layer norms included, and in-place residual additions).
- **No projections of the padding.** The windowed layers pad the 64 x 64 token grid with zeros to 70 x 70 (whole
  14 x 14 windows). transformers pads before the q/k/v projection and crops after the output projection, so both
  run on 4900 rows; here they run on the image's 4096 and the padding gets the q/k/v bias, what a zero row
  projects to (30 GFLOP fewer per image).
- **A contiguous residual stream.** The patch embedding comes out of its convolution channels first, and
  transformers keeps that layout through all 12 layers, so every layer norm first copies its input and every
  residual addition strides through memory. Here the stream is made contiguous once.
- **Fewer layout copies.** Window partitioning and the head-major q/k/v layout are one copy, and so are the
  attention output's merge and un-partitioning.

:func:`encode_images` takes this path where it was measured and checked (CPU, float32/float64, inference, plain
``nn.Linear`` layers, no hooks) and calls ``model.get_image_embeddings`` otherwise: with gradients, in training mode,
with adapters on the linear layers (peft), or with hooks registered on the encoder, so that a hook sees the real
module run. :func:`unsupported_reason` says which.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from lmt.errors import InvalidInputError

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "float64")


def _vision_encoder(model: Any) -> Any:
    """The SamVisionEncoder inside a SamModel, or the encoder itself."""
    from transformers.models.sam.modeling_sam import SamVisionEncoder

    encoder = getattr(model, "vision_encoder", model)
    if not isinstance(encoder, SamVisionEncoder):
        raise InvalidInputError(
            f"The fast SAM image encoder takes a transformers SamModel or SamVisionEncoder, not "
            f"{type(model).__name__}. Load a SAM model, e.g. lmt.load('sam-vit-base').model.",
            f"快速 SAM 图像编码器只接受 transformers 的 SamModel 或 SamVisionEncoder，收到的是 "
            f"{type(model).__name__}。请先加载 SAM 模型，例如 lmt.load('sam-vit-base').model。",
        )
    return encoder


def unsupported_reason(model: Any) -> str | None:
    """Why the fast path cannot run this model as it is now, or None when it can.

    The fast path reads the weights of the attention and MLP ``nn.Linear`` layers directly, so it needs exactly
    those (a peft LoRA wrapper around one would be bypassed), and it computes no gradients.
    """
    import torch
    from torch import nn
    from transformers.models.sam.modeling_sam import SamVisionAttention

    encoder = _vision_encoder(model)
    dtype = encoder.patch_embed.projection.weight.dtype
    if str(dtype).removeprefix("torch.") not in _DTYPES:
        return f"dtype {dtype} (the fast path is checked for float32 and float64)"
    if encoder.training:
        return "the encoder is in training mode (call model.eval())"
    if torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters()):
        return "gradients are enabled (run it under torch.inference_mode() or torch.no_grad())"
    if encoder.config.hidden_act != "gelu":
        return f"activation {encoder.config.hidden_act!r} (the fast path implements the exact GELU)"
    for layer in encoder.layers:
        if not isinstance(layer.attn, SamVisionAttention):
            return f"attention module {type(layer.attn).__name__}"
        for linear in (layer.attn.qkv, layer.attn.proj, layer.mlp.lin1, layer.mlp.lin2):
            if type(linear) is not nn.Linear:
                return f"a {type(linear).__name__} in place of an nn.Linear (adapters are not read)"
    if any(module._forward_hooks or module._forward_pre_hooks for module in encoder.modules()):
        return "hooks are registered on the encoder (they would not see the fast path run)"
    return None


@dataclass
class _Buffers:
    """The large scratch tensors of one call, each allocated once and reused by every layer.

    A freed tensor above glibc's mmap threshold goes back to the OS, so without this the next layer would fault
    its pages in (zeroed) all over again.
    """

    like: Any
    tensors: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, *shape: int) -> Any:
        """An uninitialised tensor of ``shape`` backed by the same storage on every call with this ``name``."""
        import torch

        size = math.prod(shape)
        flat = self.tensors.get(name)
        if flat is None or flat.numel() < size:
            flat = torch.empty(size, dtype=self.like.dtype, device=self.like.device)
            self.tensors[name] = flat
        return flat[:size].view(shape)


def _layer_norm(norm: Any, x: Any, buffers: _Buffers, name: str) -> Any:
    """``norm(x)`` for an ``nn.LayerNorm`` over the last dimension, written into the buffer ``name``: the
    kernel ``F.layer_norm`` runs, so the same numbers."""
    import torch
    from torch import nn

    if type(norm) is not nn.LayerNorm:
        return norm(x)
    rows = x.shape[:-1]
    out = buffers.get(name, *x.shape)
    mean, rstd = buffers.get(f"{name}_mean", *rows, 1), buffers.get(f"{name}_rstd", *rows, 1)
    torch.ops.aten.native_layer_norm.out(x, list(norm.normalized_shape), norm.weight, norm.bias, norm.eps,
                                         out0=out, out1=mean, out2=rstd)
    return out


def _linear(x: Any, linear: Any, out: Any) -> Any:
    """``linear(x)`` for 2-D ``x``, written into ``out``: the addmm that ``nn.Linear`` runs."""
    import torch

    if linear.bias is None:
        return torch.mm(x, linear.weight.t(), out=out)
    return torch.addmm(linear.bias, x, linear.weight.t(), out=out)


def _window_spans(size: int, window: int) -> list[tuple[int, int, int, int, int]]:
    """How a grid side of ``size`` tokens splits into windows: (first token, end token, first window, windows,
    tokens per window) for the whole windows, then for the part-filled last one, if any."""
    whole = size // window
    spans = [(0, whole * window, 0, whole, window)] if whole else []
    if size % window:
        spans.append((whole * window, size, whole, 1, size % window))
    return spans


def _copy_windows(grid: Any, windows: Any, window: int, into_windows: bool) -> None:
    """Copy between a token grid (batch, h, w, *channels) and windows (batch, nh, nw, window, window, *channels)
    of the grid zero-padded to whole windows, either way. The padding of the windows is not touched."""
    _, h, w = grid.shape[:3]
    channels = tuple(range(5, grid.dim() + 2))
    for row0, row1, wrow, nrows, rows in _window_spans(h, window):
        for col0, col1, wcol, ncols, cols in _window_spans(w, window):
            region = grid[:, row0:row1, col0:col1].unflatten(1, (nrows, rows)).unflatten(3, (ncols, cols))
            region = region.permute(0, 1, 3, 2, 4, *channels)  # (batch, nrows, ncols, rows, cols, *channels)
            part = windows[:, wrow:wrow + nrows, wcol:wcol + ncols, :rows, :cols]
            if into_windows:
                part.copy_(region)
            else:
                region.copy_(part)


class FastSamImageEncoder:
    """SAM's image encoder for inference, sharing the parameters of a transformers SAM model.

    ``encoder(pixel_values)`` returns what ``model.get_image_embeddings(pixel_values)`` returns with transformers'
    default (SDPA) attention, shape (batch, output_channels, height / patch, width / patch). Build it with
    :func:`fast_image_encoder`.
    """

    def __init__(self, model: Any) -> None:
        self.encoder = _vision_encoder(model)

    # ---- the whole encoder -------------------------------------------------------------------------------------
    def __call__(self, pixel_values: Any) -> Any:
        import torch

        reason = unsupported_reason(self.encoder)
        if reason is not None:
            raise InvalidInputError(
                f"The fast SAM image encoder cannot run this model: {reason}. Use model.get_image_embeddings, "
                "or lmt.models.sam_fast.encode_images, which picks the right path.",
                f"快速 SAM 图像编码器无法运行该模型：{reason}。请改用 model.get_image_embeddings，"
                "或 lmt.models.sam_fast.encode_images（它会自动选择可用的实现）。",
            )
        pixel_values = self._checked(pixel_values)
        with torch.no_grad():
            return self._encode(pixel_values)

    def _checked(self, pixel_values: Any) -> Any:
        import torch

        embed = self.encoder.patch_embed
        expected = (embed.num_channels, *embed.image_size)
        if (not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4
                or tuple(pixel_values.shape[1:]) != expected or pixel_values.shape[0] == 0):
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise InvalidInputError(
                f"SAM's image encoder takes pixel values of shape (batch, {', '.join(map(str, expected))}), "
                f"got {shape}. Prepare images with the model's SamProcessor.",
                f"SAM 图像编码器需要形状为 (batch, {', '.join(map(str, expected))}) 的像素张量，收到 {shape}。"
                "请用模型自带的 SamProcessor 预处理图像。",
            )
        weight = embed.projection.weight
        return pixel_values.to(weight.device, weight.dtype)

    def _encode(self, pixel_values: Any) -> Any:
        """Pixel values (batch, channels, height, width) -> image embeddings (batch, output_channels, h, w)."""
        import torch

        encoder = self.encoder
        buffers = _Buffers(pixel_values)
        patches = encoder.patch_embed(pixel_values)  # (batch, h, w, hidden), a view of the convolution's output
        # Our own storage from here on, each layer updating it in place. Contiguous: the patches are laid out
        # channels first, and ``patches + pos_embed`` keeps that layout, so every layer norm would first copy
        # its input and every residual addition would stride through memory (transformers pays both).
        x = buffers.get("residual", *patches.shape)
        if encoder.pos_embed is not None:
            torch.add(patches, encoder.pos_embed, out=x)
        else:
            x.copy_(patches)
        for layer in encoder.layers:
            self._attention_block(layer, x, buffers)
            self._mlp_block(layer, x, buffers)
        # the neck's convolutions get the channels-first layout transformers gives them (same algorithm, same bits)
        return encoder.neck(x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1))

    # ---- attention --------------------------------------------------------------------------------------------
    def _attention_block(self, layer: Any, x: Any, buffers: _Buffers) -> None:
        """``x += attention(layer_norm1(x))`` in place, within windows or globally: what transformers'
        ``SamVisionSdpaAttention`` computes, output projection included.

        The q/k/v and output projections run on the image's own tokens only. transformers pads the token grid with
        zeros to whole windows first, so its projections also run on the padding (4900 rows instead of 4096 for
        ViT-B at 1024 px); a zero row projects to the bias, which is what the padding gets here.
        """
        attn = layer.attn
        batch, h, w, hidden = x.shape
        heads = attn.num_attention_heads
        normed = _layer_norm(layer.layer_norm1, x, buffers, "normed").view(-1, hidden)
        qkv = _linear(normed, attn.qkv, buffers.get("qkv", batch * h * w, 3 * hidden)).view(batch, h, w, 3, heads, -1)
        merged = buffers.get("attn_merged", batch, h, w, hidden)
        if layer.window_size > 0:
            self._window_attention(attn, qkv, layer.window_size, merged, buffers)
        else:
            self._global_attention(attn, qkv, merged, buffers)
        projected = _linear(merged.view(-1, hidden), attn.proj, buffers.get("attn_out", batch * h * w, hidden))
        x.add_(projected.view(x.shape))

    def _window_attention(self, attn: Any, qkv: Any, window: int, merged: Any, buffers: _Buffers) -> None:
        """Attention within non-overlapping ``window`` x ``window`` windows of the zero-padded token grid, written
        into ``merged`` (batch, h, w, hidden) for the image's own tokens.

        ``qkv`` is (batch, h, w, 3, heads, head_dim). The windows are laid out (3, batch * windows, heads, tokens,
        head_dim), as transformers lays out q, k and v; the padding's queries, keys and values are the q/k/v
        bias, the projection of a zero token (the keys and values of the padding take part in the attention of
        the tokens next to it).
        """
        import torch
        import torch.nn.functional as F

        batch, h, w, _, heads, dim = qkv.shape
        nh, nw = -(-h // window), -(-w // window)
        qkv_windows = buffers.get("qkv_windows", 3, batch * nh * nw, heads, window * window, dim)
        # the same memory seen as (batch, nh, nw, window, window, 3, heads, dim), the grid's layout
        as_grid = qkv_windows.view(3, batch, nh, nw, heads, window, window, dim).permute(1, 2, 3, 5, 6, 0, 4, 7)
        _copy_windows(qkv, as_grid, window, into_windows=True)
        qkv_bias = attn.qkv.bias
        padding = 0.0 if qkv_bias is None else qkv_bias.view(3, heads, dim)
        if h % window:
            as_grid[:, nh - 1, :, h % window:] = padding
        if w % window:
            as_grid[:, :, nw - 1, :, w % window:] = padding
        query, key, value = qkv_windows.unbind(0)
        mask = None
        if attn.use_rel_pos:
            rel_h, rel_w = self._decomposed_rel_pos(attn, query.reshape(-1, window * window, dim), (window, window))
            mask = buffers.get("window_bias", batch * nh * nw * heads, window * window, window * window)
            torch.add(rel_h[..., None], rel_w[..., None, :], out=mask.view(-1, window, window, window, window))
            mask = mask.view(batch * nh * nw, heads, window * window, window * window)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)  # (batch * windows, heads, tokens, dim)
        # seen as (batch, nh, nw, window, window, heads, dim), whatever its strides: one copy into the grid
        out_windows = out.unflatten(0, (batch, nh, nw)).unflatten(4, (window, window)).permute(0, 1, 2, 4, 5, 3, 6)
        _copy_windows(merged.view(batch, h, w, heads, dim), out_windows, window, into_windows=False)

    def _global_attention(self, attn: Any, qkv: Any, merged: Any, buffers: _Buffers) -> None:
        """Attention over all tokens, one image and head at a time, written into ``merged`` (batch, h, w, hidden).

        One head at a time, so that the relative-position bias handed to SDPA is one head's (tokens, tokens)
        matrix, reused, instead of all heads' at once, allocated on every call (805 MB for ViT-B at 1024 px).
        """
        import torch
        import torch.nn.functional as F

        batch, h, w, _, heads, dim = qkv.shape
        tokens = h * w
        # (3, batch * heads, tokens, dim), as transformers lays q, k, v out
        qkv_heads = buffers.get("qkv_heads", 3, batch * heads, tokens, dim)
        qkv_heads.view(3, batch, heads, tokens, dim).copy_(qkv.view(batch, tokens, 3, heads, dim).permute(2, 0, 3, 1, 4))
        query, key, value = (t.view(batch, heads, tokens, dim) for t in qkv_heads.unbind(0))
        rel_h = rel_w = bias = None
        if attn.use_rel_pos:
            rel_h, rel_w = self._decomposed_rel_pos(attn, qkv_heads[0], (h, w))
            bias = buffers.get("head_bias", 1, 1, tokens, tokens)
        by_head = merged.view(batch, tokens, heads, dim)
        for image in range(batch):
            for head in range(heads):
                if bias is not None:
                    index = image * heads + head
                    torch.add(rel_h[index, :, :, :, None], rel_w[index, :, :, None, :], out=bias.view(h, w, h, w))
                part = (slice(image, image + 1), slice(head, head + 1))
                out = F.scaled_dot_product_attention(query[part], key[part], value[part], attn_mask=bias)
                by_head[image, :, head].copy_(out[0, 0])

    @staticmethod
    def _decomposed_rel_pos(attn: Any, query: Any, size: tuple[int, int]) -> tuple[Any, Any]:
        """transformers' decomposed relative-position terms, (batch * heads, h, w, key row) and (..., key column),
        computed as ``get_decomposed_rel_pos`` does but not summed into the full bias."""
        import torch

        h, w = size
        table_h = attn.get_rel_pos(h, h, attn.rel_pos_h)
        table_w = attn.get_rel_pos(w, w, attn.rel_pos_w)
        grid = query.reshape(query.shape[0], h, w, query.shape[-1])
        return torch.einsum("bhwc,hkc->bhwk", grid, table_h), torch.einsum("bhwc,wkc->bhwk", grid, table_w)

    # ---- MLP --------------------------------------------------------------------------------------------------
    def _mlp_block(self, layer: Any, x: Any, buffers: _Buffers) -> None:
        """``x += mlp(layer_norm2(x))`` in place."""
        import torch

        hidden = x.shape[-1]
        mlp = layer.mlp
        normed = _layer_norm(layer.layer_norm2, x, buffers, "normed").view(-1, hidden)
        activations = _linear(normed, mlp.lin1, buffers.get("mlp_hidden", normed.shape[0], mlp.lin1.out_features))
        torch.ops.aten.gelu_(activations)
        x.add_(_linear(activations, mlp.lin2, buffers.get("mlp_out", normed.shape[0], hidden)).view(x.shape))


def fast_image_encoder(model: Any) -> FastSamImageEncoder:
    """The fast encoder of a transformers ``SamModel``/``SamVisionEncoder``, sharing its parameters.

    Calling it raises :class:`~lmt.errors.InvalidInputError` where the fast path does not apply, with the reason
    (see :func:`unsupported_reason`); :func:`encode_images` falls back to transformers' call there instead.
    """
    return FastSamImageEncoder(model)


def encode_images(model: Any, pixel_values: Any) -> Any:
    """``model.get_image_embeddings(pixel_values)``, by the fast path on CPU where it applies."""
    encoder = _vision_encoder(model)
    reason = unsupported_reason(encoder)
    if reason is None and encoder.patch_embed.projection.weight.device.type != "cpu":
        reason = "not on the CPU (the fast path is measured on CPU only)"
    if reason is not None:
        logger.debug("SAM image encoder: transformers' path, because %s", reason)
        return model.get_image_embeddings(pixel_values) if encoder is not model else encoder(pixel_values)[0]
    return FastSamImageEncoder(encoder)(pixel_values)
