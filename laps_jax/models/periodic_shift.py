"""Periodic Shift (P-Shift, LAPS): a per-head temporal shift of the attention output.

Applied to `attn @ v` before the output projection. In every head, with head dim d and fold =
d // shift_div: channels [0, fold) read frame t+1, channels [fold, 2*fold) read frame t-1, the rest
stay. Frames outside the clip read as zero (no wrap-around); cls tokens are shifted like the rest.
In the merged (head-major) channel axis the shifted blocks recur every d channels, which is what
distinguishes it from one shift over C/4 of the full width (the official code's "PlainShift").
"""
import jax
import jax.numpy as jnp


def periodic_shift(o: jax.Array, shift_div: int) -> jax.Array:
  """Shift per head along time.

  Args:
    o: (B, T, L, H, d) attention output, t the original frame index.
    shift_div: fold = d // shift_div channels per direction; 0 disables the shift.
  Returns:
    (B, T, L, H, d).
  """
  if shift_div == 0:
    return o
  d = o.shape[-1]
  fold = d // shift_div
  if fold == 0:
    raise ValueError(f'periodic shift: head dim {d} is smaller than shift_div {shift_div}')
  zero_frame = jnp.zeros_like(o[:, :1, ..., :fold])
  from_next = jnp.concatenate([o[:, 1:, ..., :fold], zero_frame], axis=1)             # out[t] = o[t+1]
  from_prev = jnp.concatenate([zero_frame, o[:, :-1, ..., fold:2 * fold]], axis=1)    # out[t] = o[t-1]
  return jnp.concatenate([from_next, from_prev, o[..., 2 * fold:]], axis=-1)
