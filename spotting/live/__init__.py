"""Live spotting: a trained causal spotter on a camera, a network stream or a file as it plays.

- stream.py: the Python API (`LiveSpotter`: frames with timestamps in, decided intervals out), resampling the
  stream to the spotter's rate;
- decide.py: the decisions (the detector reader over a sliding window, each box decided once, a fixed time after
  its offset), shared with LOSO's causal mode;
- sources.py: cameras, URLs and files read in a thread into a bounded queue (frames dropped, never queued without
  bound, when the spotter falls behind a live source).
The channels come from spotting.channels.causal; the command is spotting.cli.live.
"""
