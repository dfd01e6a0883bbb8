"""voxline.bench: ``voxline bench``, simulated callers measured at the caller.

Callers play scripted turns against a running voxline (``--url``) or one the
harness starts in this process, over a real transport (``lines/``), and time
what they hear: voice-to-voice per turn, barge-in, the service's own per-turn
marks joined to the caller's figure, a capacity ramp; ``report`` renders a
self-contained HTML page from the result and ``compare`` sets two runs side by
side. ``delay`` is a synthetic agent with a known reply delay, against which
the harness's own measurement is tested.
"""

__all__: list[str] = []
