"""pretrain: VideoMAE pretraining of the LGI-Former encoder.

Importing the package registers the named models (lgi_base, lgi_tiny) with timm's model registry, as importing
timm.models registers timm's own: pretrain.model_config.named_config and timm.create_model read them from there.
"""
from pretrain import lgi_former  # noqa: F401 (registers the named models with timm)
