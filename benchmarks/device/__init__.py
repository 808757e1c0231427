"""The parts of benchmarks/device_suite.py (the one script to run on a GPU machine): the pretraining step, the
loader against the step, the spotting model half, and the verdict on what held the step back."""
