"""tricl: train, load and look inside SimCLR and triCL encoders (identifiable contrastive CL)."""

__version__ = "0.1.0"
